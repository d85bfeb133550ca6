#![recursion_limit = "512"]
//! The gateway binary: `amqp-gateway [--config FILE] [serve | import FILE | export [--output FILE]]`.

use std::path::PathBuf;

use clap::Parser;

/// AMQP 0-9-1 gateway storing messages in RocketMQ.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (see deploy/gateway.example.toml); AMQP_GATEWAY_* variables override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve AMQP clients (the default).
    Serve,
    /// Create what a RabbitMQ definitions file describes (rabbitmqctl
    /// export_definitions, GET /api/definitions) in the meta store and
    /// RocketMQ; idempotent. Prints what was created and what could not be mapped.
    Import {
        /// The definitions JSON file.
        file: PathBuf,
    },
    /// Write the meta store as RabbitMQ definitions JSON.
    Export {
        /// Where to write (standard output if absent).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    proxy::logging::init("info");
    let args = Args::parse();
    match run(args).await {
        // Exit at once: connections and feeds are done (server.rs).
        Ok(()) => std::process::exit(0),
        Err(error) => {
            tracing::error!(%error, "Gateway stopped.");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = proxy::Config::load(args.config.as_deref())?;
    if let Some(dir) = config
        .meta_url
        .strip_prefix("sqlite:")
        .and_then(|p| std::path::Path::new(p).parent())
    {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    match args.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Import { file } => {
            let defs: proxy::definitions::Definitions =
                serde_json::from_slice(&std::fs::read(&file)?)?;
            let store = meta::Store::open(&config.meta_url).await?;
            store
                .bootstrap_defaults(&proxy::mapping::names::vhost_namespace("/"))
                .await?;
            let upstream = proxy::connect_upstream(&config, proxy::clock::Clock::System).await?;
            let report = proxy::definitions::import(&store, &*upstream, &defs).await?;
            println!("{report}");
            Ok(())
        }
        Command::Export { output } => {
            let store = meta::Store::open(&config.meta_url).await?;
            let defs = proxy::definitions::export(&store).await?;
            let json = serde_json::to_string_pretty(&defs)?;
            match output {
                Some(path) => std::fs::write(path, json + "\n")?,
                None => println!("{json}"),
            }
            Ok(())
        }
    }
}

async fn serve(config: proxy::Config) -> Result<(), Box<dyn std::error::Error>> {
    let listen = config.listen;
    let gateway = proxy::Gateway::start(config).await?;
    proxy::health::start(&gateway).await?;
    proxy::management::start(&gateway).await;
    proxy::metrics::endpoint::start(&gateway).await;
    let listeners = proxy::server::bind(&gateway, listen).await?;
    // Never dropped: the process exits right after serve (main), and
    // dropping RocketMQ's clients would only write shutdown reports.
    std::mem::forget(gateway.clone());
    proxy::server::serve_all(gateway, listeners, shutdown_signal()).await;
    tracing::info!("Shut down.");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
