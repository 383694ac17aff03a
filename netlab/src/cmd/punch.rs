//! `netlab punch`: the hole-punching matrix.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use streamr_netlab::engine::nat::{Family, parse_preset_list};
use streamr_netlab::proof::punch::{self, PunchOptions, Start};
use streamr_netlab::{Lab, LabConfig};

use super::{EXIT_MISMATCH, write_file};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Presets, comma-separated, or `all` (the IPv4 types); v6-firewall, cgnat-v6 and pcp by name. Pairs
    /// of sites with IPv6 are punched over IPv6 too.
    #[arg(long, default_value = "all")]
    presets: String,
    /// Starts to run: simultaneous, staggered (comma-separated).
    #[arg(long, default_value = "simultaneous,staggered")]
    starts: String,
    /// One-way delays per access link in ms (comma-separated).
    #[arg(long, default_value = "0,50")]
    delays: String,
    /// The reduced set used by the tests: none, port-restricted and symmetric, both starts, 0 and 50 ms.
    #[arg(long, conflicts_with = "presets")]
    quick: bool,
    /// How much later peer B starts in a staggered start, in ms.
    #[arg(long, default_value_t = 300)]
    stagger_ms: u64,
    /// How long a peer punches before giving up, in ms.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// Cases run at once.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
    /// Peers answer only the address the rendezvous gave (changes the expected matrix).
    #[arg(long)]
    no_follow_source: bool,
    /// Write every outcome as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the matrices as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write one SVG picture per matrix into this directory.
    #[arg(long)]
    svg_dir: Option<PathBuf>,
}

fn parse_list<T: std::str::FromStr>(s: &str, what: &str) -> anyhow::Result<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse::<T>()
                .map_err(|e| anyhow::anyhow!("--{what} {x:?}: {e}"))
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let presets = if args.quick {
        parse_preset_list("none,port-restricted,symmetric")?
    } else {
        parse_preset_list(&args.presets)?
    };
    let starts: Vec<Start> = parse_list(&args.starts, "starts")?;
    let delays: Vec<u32> = parse_list(&args.delays, "delays")?;
    let opts = PunchOptions {
        stagger: Duration::from_millis(args.stagger_ms),
        timeout: Duration::from_millis(args.timeout_ms),
        follow_source: !args.no_follow_source,
        jobs: args.jobs.max(1),
        ..PunchOptions::default()
    };
    let cases = punch::cases(&presets, &starts, &delays);
    println!("Expected (RFC 4787 behaviours; ok* = only via the observed source):");
    print!(
        "{}",
        punch::expectation_table(&presets, opts.follow_source).to_text()
    );
    if presets.iter().any(|p| p.has_firewalled_ipv6()) {
        println!("Expected over IPv6 (sites with IPv6 only; routed, through stateful firewalls):");
        print!(
            "{}",
            punch::expectation_table_over(&presets, opts.follow_source, Family::Ipv6).to_text()
        );
    }
    eprint!("punch: {} cases, {} at a time: ", cases.len(), opts.jobs);
    let start = Instant::now();
    let lab = Lab::new(LabConfig::default())?;
    let progress = |o: &punch::PunchOutcome| {
        eprint!("{}", if o.matches { "." } else { "!" });
        let _ = std::io::stderr().flush();
    };
    let outcomes = punch::run(&lab, &cases, &opts, &progress);
    let teardown = lab.shutdown()?;
    eprintln!();
    let outcomes = outcomes?;
    let grids = punch::grids(&outcomes, &opts);
    let mut markdown = String::new();
    for m in &grids {
        println!("\n{}", m.grid.title);
        let md = m.grid.to_markdown();
        print!("{md}");
        markdown.push_str(&format!("### {}\n\n{md}\n", m.grid.title));
    }
    let mismatches: Vec<_> = outcomes.iter().filter(|o| !o.matches).collect();
    for o in &mismatches {
        println!(
            "MISMATCH {} x {} ({}, {} ms, {}): expected {:?}, got {}{}",
            o.case.a,
            o.case.b,
            o.case.family,
            o.case.delay_ms,
            o.case.start,
            o.expected,
            if o.direct { "direct" } else { "no direct path" },
            o.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    let (n, ok) = punch::summary(&outcomes);
    println!(
        "\npunch: {n} cases, {ok} as expected, {} direct; lab {} in {:.1} s (teardown {:.2} s)",
        outcomes.iter().filter(|o| o.direct).count(),
        lab.prefix(),
        start.elapsed().as_secs_f64(),
        teardown.elapsed.as_secs_f64()
    );
    if let Some(p) = &args.json {
        write_file(p, &serde_json::to_string_pretty(&outcomes)?)?;
    }
    if let Some(p) = &args.markdown {
        write_file(p, &markdown)?;
    }
    if let Some(dir) = &args.svg_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for m in &grids {
            write_file(&dir.join(m.svg_file_name()), &m.grid.to_svg())?;
        }
    }
    Ok(if mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISMATCH)
    })
}
