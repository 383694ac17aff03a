//! `netlab`: the NAT laboratory's command line. Parsing and printing only; the work is in the library.

mod cmd;

fn main() -> std::process::ExitCode {
    cmd::main()
}
