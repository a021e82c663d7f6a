//! The `provisioning` command line. Errors end here: printed as `{:#}`
//! (the whole cause chain on one line) with exit status 1.

use clap::{Parser, Subcommand};
use provisioning::settings::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "provisioning",
    version,
    about = "Turns bare-metal machines into joined Proxmox VE cluster nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (embedded defaults without --config: 127.0.0.1:8080, ./hosts.d, ./state, PXE off)
    Serve {
        /// Settings file (provisioning.yaml)
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override server.listen (e.g. 127.0.0.1:0 for a free port)
        #[arg(long)]
        listen: Option<String>,
    },
    /// Validate host declarations like `nginx -t`; exit 1 when there is a problem
    Check {
        /// The hosts.d directory (default: ./hosts.d)
        dir: Option<PathBuf>,
        /// A server-types.yaml to validate with the hosts
        #[arg(long)]
        server_types: Option<PathBuf>,
        /// Output format
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// The pxe-init overlay (a reproducible gzip'd CPIO of overlay/)
    Overlay {
        #[command(subcommand)]
        command: OverlayCommand,
    },
    /// Print (or write) the dnsmasq configuration rendered from the settings
    DnsmasqConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Write to this file instead of stdout
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show the fleet (or one host with its history) from a running daemon;
    /// exit 1 when a shown host is failed, 2 when the daemon is unreachable
    Status {
        /// The daemon's base URL
        #[arg(long, env = "PROVISIONING_URL", default_value = provisioning::status::DEFAULT_URL)]
        url: String,
        /// Print the API's JSON instead of a table
        #[arg(long)]
        json: bool,
        /// Keep following the event stream and print transitions as they happen
        #[arg(long)]
        watch: bool,
        /// Show this host in detail
        host: Option<String>,
    },
    /// Prepare a Proxmox ISO for automated installation from our answer URL
    Iso {
        #[command(subcommand)]
        command: IsoCommand,
    },
}

#[derive(Subcommand)]
enum OverlayCommand {
    /// Write the overlay archive (same input, same bytes)
    Build {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum IsoCommand {
    /// Bake /auto-installer-mode.toml (fetch the answer over HTTP) into a copy of the ISO,
    /// like `proxmox-auto-install-assistant prepare-iso --fetch-from http`
    Prepare {
        #[arg(long)]
        iso: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Answer URL (default: <server.public_url>/api/boot/answer from --config)
        #[arg(long)]
        url: Option<String>,
        /// SHA-256 fingerprint of our TLS certificate (https answer URLs)
        #[arg(long)]
        cert_fingerprint: Option<String>,
        /// File holding the Proxmox 9.2 answer bearer token
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Extract the installer kernel and a gzip initrd (iPXE cannot load zstd)
    Extract {
        #[arg(long)]
        iso: PathBuf,
        #[arg(long)]
        out_dir: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

fn load_settings(config: Option<&PathBuf>) -> anyhow::Result<Settings> {
    Ok(match config {
        Some(p) => Settings::load(p)?,
        None => Settings::embedded_default()?,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("provisioning: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, listen } => {
            provisioning::logging::init();
            let mut settings = load_settings(config.as_ref())?;
            if let Some(l) = listen {
                settings.server.listen = l
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--listen {l:?}: {e}"))?;
            }
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let listener = provisioning::server::bind(settings.server.listen).map_err(|e| {
                    anyhow::anyhow!("cannot listen on {}: {e}", settings.server.listen)
                })?;
                provisioning::daemon::run(settings, listener, std::future::pending()).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            dir,
            server_types,
            format,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("hosts.d"));
            let format = match format {
                Format::Text => provisioning::check::CheckFormat::Text,
                Format::Json => provisioning::check::CheckFormat::Json,
            };
            let mut out = std::io::stdout().lock();
            let valid =
                provisioning::check::run_check(&dir, server_types.as_deref(), format, &mut out)?;
            Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status {
            url,
            json,
            watch,
            host,
        } => provisioning::status::run_status(provisioning::status::StatusArgs {
            url,
            json,
            watch,
            host,
        }),
        Command::Overlay {
            command: OverlayCommand::Build { out },
        } => {
            provisioning::boot::overlay::build_to(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DnsmasqConfig { config, out } => {
            let settings = load_settings(config.as_ref())?;
            let params = provisioning::daemon::dnsmasq_params(&settings).ok_or_else(|| {
                anyhow::anyhow!("pxe.enable is false: there is no dnsmasq configuration to render")
            })?;
            let text = provisioning::boot::dnsmasq::render_config(&params)?;
            match out {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Iso {
            command:
                IsoCommand::Prepare {
                    iso,
                    out,
                    url,
                    cert_fingerprint,
                    token_file,
                    config,
                },
        } => {
            let url = match url {
                Some(u) => u,
                None => format!(
                    "{}/api/boot/answer",
                    load_settings(config.as_ref())?.server.public_url
                ),
            };
            let token = match token_file {
                Some(p) => Some(
                    provisioning::secrets::read_secret_file(&p)?
                        .expose()
                        .to_string(),
                ),
                None => None,
            };
            let params = provisioning::boot::iso::ModeParams {
                url,
                cert_fingerprint,
                token,
            };
            provisioning::boot::iso::prepare(&iso, &out, &params)?;
            eprintln!("provisioning: wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Iso {
            command: IsoCommand::Extract { iso, out_dir },
        } => {
            let files = provisioning::boot::iso::extract_boot(&iso, &out_dir)?;
            println!("{}\n{}", files.kernel.display(), files.initrd.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
