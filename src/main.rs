//! The `roomcast` binary: parses the command line, loads the config and calls the library.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use roomcast::auth::jwt::{TokenClaims, now_secs, sign_hs256_with_kid};
use roomcast::config::{Config, LogFormat, Source};
use roomcast::rooms::{Grant, Id};

#[derive(Parser)]
#[command(
    name = "roomcast",
    version,
    about = "A Socket.IO-compatible realtime server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Config file; `./config.toml` when omitted (defaults apply if that does not exist).
    #[arg(long, short, env = "ROOMCAST_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ConfigArg),
    /// Print an HS256 JWT signed with the configured secret (a developer convenience):
    /// `auth.jwt_secret`, else the first `[[auth.keys]]` secret, whose `kid` it carries.
    Token {
        #[command(flatten)]
        config: ConfigArg,
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        #[arg(long)]
        tenant: Option<String>,
        /// Project ids, comma-separated, or `*` for all.
        #[arg(long)]
        projects: Option<String>,
        /// Agent ids, comma-separated, or `*` for all.
        #[arg(long)]
        agents: Option<String>,
        /// `admin` may join every room of its tenant.
        #[arg(long)]
        role: Option<String>,
        /// The `publish` claim: rooms to publish client events into, comma-separated
        /// patterns (`project:42,project:7*`), or `*`. Without it the token is not narrowed.
        #[arg(long)]
        publish: Option<String>,
        /// Lifetime, e.g. `30m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Validate a config and print the effective settings (secrets masked).
    CheckConfig(ConfigArg),
    /// Publish one typed event over the HTTP API (POST /api/v1/events), for scripts and cron.
    Publish(PublishArgs),
    /// Print a documented config with fresh random secrets (the API key itself goes to stderr).
    Genconfig,
}

/// What `roomcast publish` sends.
#[derive(clap::Args)]
struct PublishArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The event type, e.g. `project.updated`.
    #[arg(long = "type")]
    event_type: String,
    /// The event's data as JSON, or `-` to read it from stdin.
    #[arg(long)]
    data: String,
    #[arg(long)]
    tenant: Option<String>,
    /// Server base URL (http:// or https://); from the config's `server.bind` when omitted.
    #[arg(long, env = "ROOMCAST_URL")]
    url: Option<String>,
    /// API key with the `publish` scope; the config's first plain `key` with that scope
    /// when omitted.
    #[arg(long, env = "ROOMCAST_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Publish at most once per key (a retry of the same run publishes nothing twice).
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Live delivery only: no `seq`, not kept in history.
    #[arg(long)]
    volatile: bool,
}

/// Writes to stdout. A reader that went away (`roomcast check-config | head`) ends the
/// output quietly instead of panicking like `print!` does.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn publish(args: PublishArgs) -> Result<(), String> {
    let data = if args.data == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("reading stdin: {e}"))?
    } else {
        args.data
    };
    let data: serde_json::Value =
        serde_json::from_str(&data).map_err(|e| format!("--data is not JSON: {e}"))?;
    // The config is read only for what the flags leave out.
    let mut loaded = None;
    let mut config = || -> Result<Config, String> {
        if loaded.is_none() {
            loaded = Some(load(&args.config)?);
        }
        loaded.clone().ok_or_else(|| "no config".to_owned())
    };
    let base = match args.url {
        Some(url) => url,
        None => {
            let mut addr = config()?.server.bind;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}")
        }
    };
    let key = match args.api_key {
        Some(key) => key,
        None => config()?
            .api_keys
            .iter()
            .find(|k| k.scopes.contains(&roomcast::config::Scope::Publish))
            .and_then(|k| Some(k.key.as_ref()?.expose().to_owned()))
            .ok_or("give --api-key (or ROOMCAST_API_KEY): the config has no plain key with the publish scope")?,
    };
    let mut body = serde_json::json!({"type": args.event_type, "data": data});
    if let Some(tenant) = args.tenant {
        body["tenant"] = tenant.into();
    }
    if args.volatile {
        body["volatile"] = true.into();
    }
    let url = format!("{}/api/v1/events", base.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (status, answer) = runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .post(&url)
            .bearer_auth(key)
            .timeout(Duration::from_secs(30))
            .json(&body);
        if let Some(k) = &args.idempotency_key {
            request = request.header("Idempotency-Key", k);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        Ok::<_, String>((status, text))
    })?;
    if status.is_success() {
        emit(&format!("{answer}\n"));
        return Ok(());
    }
    let error: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    let error = &error["error"];
    Err(match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => format!("{} {code}: {message}", status.as_u16()),
        _ => format!("{} {answer}", status.as_u16()),
    })
}

/// The shipped config.toml with its development secrets replaced by fresh random ones.
fn genconfig() -> Result<(), String> {
    use sha2::Digest;
    let hex = |bytes: [u8; 32]| hex::encode(bytes);
    let jwt_secret = hex(rand::random());
    let api_key = format!("rc_{}", hex(rand::random()));
    let api_key_sha256 = hex::encode(sha2::Sha256::digest(api_key.as_bytes()));
    let webhook_secret = hex(rand::random());
    let mut text = include_str!("../config.toml").to_owned();
    for (from, to) in [
        (
            format!("jwt_secret = \"{}\"", roomcast::config::DEV_JWT_SECRET),
            format!("jwt_secret = \"{jwt_secret}\""),
        ),
        (
            format!(
                "name = \"dev\"\nkey = \"{}\"",
                roomcast::config::DEV_API_KEY
            ),
            format!(
                "name = \"default\"\n# the key itself was printed once, on stderr, by genconfig\nkey_sha256 = \"{api_key_sha256}\""
            ),
        ),
        (
            GENCONFIG_WEBHOOK_LINE.to_owned(),
            format!("webhook_secret = \"{webhook_secret}\""),
        ),
    ] {
        if text.matches(&from).count() != 1 {
            return Err(format!("genconfig: the template lacks {from:?}"));
        }
        text = text.replace(&from, &to);
    }
    // The scopes announced are read back from the generated config, so they are the ones
    // the key really has.
    let config = Config::from_toml(&text).map_err(|e| format!("genconfig: {e}"))?;
    let scopes = config
        .api_keys
        .iter()
        .find(|k| k.key_sha256.as_deref() == Some(api_key_sha256.as_str()))
        .map(|k| {
            k.scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .ok_or("genconfig: the generated key is not in the generated config")?;
    emit("# Generated by `roomcast genconfig` with fresh secrets. Keep this file private.\n");
    emit(&text);
    eprintln!("API key (scopes: {scopes}), shown only now: {api_key}");
    Ok(())
}

/// The commented-out webhook secret in config.toml that genconfig fills in.
const GENCONFIG_WEBHOOK_LINE: &str = "# webhook_secret = \"a-long-random-string\"";

fn load(arg: &ConfigArg) -> Result<Config, String> {
    let default = PathBuf::from("config.toml");
    let source = match &arg.config {
        Some(path) => Source::Explicit(path),
        None => Source::Default(&default),
    };
    Config::load(source).map_err(|e| e.to_string())
}

fn parse_grant(flag: &str, value: Option<&str>) -> Result<Grant, String> {
    match value {
        None => Ok(Grant::None),
        Some("*") => Ok(Grant::All),
        Some(list) => list
            .split(',')
            .map(|s| Id::parse(s.trim()).ok_or_else(|| format!("--{flag}: invalid id {s:?}")))
            .collect::<Result<Vec<_>, _>>()
            .map(|ids| Grant::Some(ids.into())),
    }
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    // Protocol-level crates log whole messages (tokens included) when verbose: held at
    // info unless the filter names them (`roomcast::config::log_filter`).
    let level = std::env::var("RUST_LOG")
        .ok()
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| config.log.level.clone());
    let filter = EnvFilter::try_new(roomcast::config::log_filter(&level))
        .unwrap_or_else(|_| EnvFilter::new(roomcast::config::log_filter("info")));
    // Redaction happens where lines are written, so no filter can let a token through.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(roomcast::logging::Redacting(std::io::stderr));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_tracing(&config);
    if config.dev_secrets_in_use() {
        tracing::warn!(
            "the development JWT secret or API key is in use: fine on loopback, refused on any other address"
        );
    }
    let server = roomcast::Roomcast::new(&config).await?;
    // Process-wide, so the binary's choice: a program embedding the library owns its heap.
    tokio::spawn(roomcast::memory::run_trimmer());
    let addr = config.server.bind;
    let listener = roomcast::listen(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        node_id = server.node_id(),
        "roomcast listening"
    );
    server.serve(listener, roomcast::shutdown_signal()).await?;
    tracing::info!("roomcast stopped");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(arg) => load(&arg).and_then(|config| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(serve(config))
                .map_err(|e| format!("{e:#}"))
        }),
        Command::CheckConfig(arg) => load(&arg).map(|config| {
            emit("# configuration is valid\n");
            if config.dev_secrets_in_use() {
                emit("# warning: the development JWT secret or API key is in use\n");
            }
            emit(&config.to_masked_toml());
        }),
        Command::Publish(args) => publish(args),
        Command::Genconfig => genconfig(),
        Command::Token {
            config,
            sub,
            tenant,
            projects,
            agents,
            role,
            publish,
            ttl,
        } => (|| {
            let config = load(&config)?;
            // The single secret, else the first secret of [[auth.keys]] (with its kid).
            let (secret, kid) = match &config.auth.jwt_secret {
                Some(secret) => (secret.expose(), None),
                None => config
                    .auth
                    .keys
                    .iter()
                    .find_map(|k| Some((k.secret.as_ref()?.expose(), Some(k.kid.as_str()))))
                    .ok_or(
                        "roomcast token signs with auth.jwt_secret or a secret of [[auth.keys]]; \
                         this config has only public keys",
                    )?,
            };
            Id::parse(&sub).ok_or(format!("--sub: invalid id {sub:?}"))?;
            if let Some(t) = &tenant {
                Id::parse(t).ok_or(format!("--tenant: invalid id {t:?}"))?;
            }
            let now = now_secs();
            let claims = TokenClaims {
                iat: Some(now.into()),
                tenant,
                projects: parse_grant("projects", projects.as_deref())?,
                agents: parse_grant("agents", agents.as_deref())?,
                role,
                publish: publish
                    .map(|list| {
                        let patterns: Vec<&str> = list.split(',').map(str::trim).collect();
                        serde_json::from_value(match patterns.as_slice() {
                            ["*"] => serde_json::json!("*"),
                            _ => serde_json::json!(patterns),
                        })
                        .map_err(|e| format!("--publish: {e}"))
                    })
                    .transpose()?,
                iss: config.auth.issuer.clone(),
                aud: config.auth.audience.clone().map(Into::into),
                ..TokenClaims::new(sub, now + ttl.as_secs())
            };
            let token = sign_hs256_with_kid(secret, kid, &claims).map_err(|e| e.to_string())?;
            emit(&format!("{token}\n"));
            Ok(())
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomcast: {e}");
            ExitCode::FAILURE
        }
    }
}
