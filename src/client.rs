//! The CLI's commands that talk to a running node (`invite`, `join`) through its HTTP API with the API
//! key from the data dir, and `password`, which writes the dashboard password's hash into config.toml.

use crate::cli::{ClientArgs, InviteArgs, JoinArgs, PasswordArgs};
use crate::config::{self, FileConfig};
use crate::datafile;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the node is and its key.
struct Target {
    base: String,
    api_key: String,
}

fn target(args: &ClientArgs) -> anyhow::Result<Target> {
    let dir: PathBuf = args
        .data_dir
        .clone()
        .unwrap_or_else(config::default_data_dir);
    let api_key = std::fs::read_to_string(dir.join(datafile::API_KEY_FILE))
        .with_context(|| {
            format!(
                "cannot read the node's API key in {}: start the node first (`streamr-node`), or pass \
                 --data-dir with the folder it runs with",
                dir.display()
            )
        })?
        .trim()
        .to_string();
    let addr = match &args.http {
        Some(a) => a.clone(),
        None => std::fs::read_to_string(dir.join(datafile::HTTP_ADDRESS_FILE))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "127.0.0.1:8080".into()),
    };
    Ok(Target {
        base: format!("http://{addr}"),
        api_key,
    })
}

/// POSTs `body` to `path`; returns the JSON answer or an error with the node's own words.
async fn post(
    t: &Target,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()?;
    let r = client
        .post(format!("{}{path}", t.base))
        .header("X-API-Key", &t.api_key)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .with_context(|| {
            format!(
                "cannot reach the node at {}: is streamr-node running? (start it with `streamr-node`)",
                t.base
            )
        })?;
    let ok = r.status().is_success();
    let v: serde_json::Value = serde_json::from_str(&r.text().await?).unwrap_or_default();
    if !ok {
        let mut msg = v["error"]
            .as_str()
            .unwrap_or("the node refused")
            .to_string();
        for d in v["details"].as_array().into_iter().flatten() {
            msg.push_str(&format!("\n  {}", d.as_str().unwrap_or_default()));
        }
        bail!(msg);
    }
    Ok(v)
}

fn run<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamr-node: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamr-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `streamr-node invite`.
pub fn invite(args: InviteArgs) -> ExitCode {
    run(async move {
        let t = target(&args.client)?;
        let mut body = serde_json::json!({ "expires": args.expires });
        if let Some(s) = args.stream {
            body["stream"] = s.into();
        }
        let v = post(&t, "/api/v1/invites", body).await?;
        println!(
            "Send your friend this invite code:\n\n{}\n",
            v["code"].as_str().unwrap_or("")
        );
        println!(
            "or this link (it opens their own dashboard with the code filled in):\n\n{}\n",
            v["link"].as_str().unwrap_or("")
        );
        Ok(())
    })
}

/// `streamr-node join CODE`.
pub fn join(args: JoinArgs) -> ExitCode {
    run(async move {
        let t = target(&args.client)?;
        let v = post(&t, "/api/v1/join", serde_json::json!({ "code": args.code })).await?;
        println!("{}", v["message"].as_str().unwrap_or("Joined."));
        if let Some(s) = v["stream"].as_str() {
            println!(
                "Watch it at {}/live/{s}.flv, or in the dashboard: {}",
                t.base, t.base
            );
        }
        Ok(())
    })
}

/// `streamr-node password`.
pub fn password(args: PasswordArgs) -> ExitCode {
    let result = (|| -> anyhow::Result<PathBuf> {
        let pw = if args.stdin {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_string()
        } else {
            let a = rpassword::prompt_password("New dashboard password: ")?;
            let b = rpassword::prompt_password("Again: ")?;
            if a != b {
                bail!("the two passwords differ: nothing was changed; try again");
            }
            a
        };
        if pw.chars().count() < 8 {
            bail!("use a password of at least 8 characters: nothing was changed");
        }
        let hash = streamr_web::hash_password(&pw).map_err(anyhow::Error::msg)?;
        let dir = args
            .data_dir
            .clone()
            .unwrap_or_else(config::default_data_dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut file: FileConfig = config::read_file(&dir)?;
        file.http_password = Some(Some(hash));
        let path = dir.join(config::CONFIG_FILE);
        datafile::write_atomic(&path, toml::to_string_pretty(&file)?.as_bytes(), true)?;
        Ok(path)
    })();
    match result {
        Ok(path) => {
            println!(
                "The dashboard password is set (its hash is in {}). Restart streamr-node to use it.",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streamr-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
