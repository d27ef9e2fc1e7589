//! The `roomcast` binary: parses the command line, loads the config and calls the library.

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
        /// Lifetime, e.g. `30m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Validate a config and print the effective settings (secrets masked).
    CheckConfig(ConfigArg),
}

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
    let listener = roomcast::listen(config.server.bind).await?;
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
            println!("# configuration is valid");
            if config.dev_secrets_in_use() {
                println!("# warning: the development JWT secret or API key is in use");
            }
            print!("{}", config.to_masked_toml());
        }),
        Command::Token {
            config,
            sub,
            tenant,
            projects,
            agents,
            role,
            ttl,
        } => (|| {
            let config = load(&config)?;
            // The single secret, else the first secret of [[auth.keys]] (with its kid).
            let (secret, kid) = match &config.auth.jwt_secret {
                Some(secret) => (secret.as_str(), None),
                None => config
                    .auth
                    .keys
                    .iter()
                    .find_map(|k| Some((k.secret.as_deref()?, Some(k.kid.as_str()))))
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
                iss: config.auth.issuer.clone(),
                aud: config.auth.audience.clone().map(Into::into),
                ..TokenClaims::new(sub, now + ttl.as_secs())
            };
            println!(
                "{}",
                sign_hs256_with_kid(secret, kid, &claims).map_err(|e| e.to_string())?
            );
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
