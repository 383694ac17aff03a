//! The contract between the lab and the helper programs it runs in its namespaces (`netlab agent ...`):
//! a server prints [`READY_LINE`] on standard output once its sockets are bound, so the lab can stop
//! waiting, and every agent exits when its standard input closes, so none outlives the lab that started it.

use std::io::Read;

/// What a server agent prints once its sockets are bound.
pub const READY_LINE: &str = "ready";

/// Exits the process when standard input closes: the lab that started this agent let go of it or died.
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

/// Prints the ready line and flushes it, so the lab can stop waiting.
pub fn announce_ready() {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{READY_LINE}");
    let _ = out.flush();
}
