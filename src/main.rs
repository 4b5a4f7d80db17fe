use clap::Parser as _;
use sidecar_sizer::cli::{Cli, Command, HistoryCommand, MeshCommand, SpecCommand};
use sidecar_sizer::sources::specs;
use sidecar_sizer::webhook::serve as server;
use sidecar_sizer::{certs, history_cmd, logging, mesh_cmd, report, review};
use std::process::ExitCode;

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new()
        .map_err(|e| eprintln!("error: cannot start the async runtime: {e}"))
        .ok()
}

fn main() -> ExitCode {
    // Bad flags exit 1 (DESIGN §2: `review` and `report` give 2 another meaning).
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Serve(args) => {
            // Lines go through a bounded channel to a writer thread; the guard flushes them
            // at exit, so it lives until the end of this arm.
            let _log_guard = logging::init(cli.log_format, args.log_buffer_lines);
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(server::run(args.to_config())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "serve failed");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Certs(args) => {
            let dns = if args.dns.is_empty() && args.ip.is_empty() {
                certs::DEFAULT_DNS.iter().map(|s| s.to_string()).collect()
            } else {
                args.dns
            };
            let ips = if args.ip.is_empty() {
                vec![std::net::IpAddr::from([127, 0, 0, 1])]
            } else {
                args.ip
            };
            match certs::generate(&dns, &ips).and_then(|b| certs::write(&args.out, &b)) {
                Ok(()) => {
                    println!(
                        "wrote {0}/ca.crt {0}/tls.crt {0}/tls.key (SANs: {1})",
                        args.out.display(),
                        dns.iter()
                            .cloned()
                            .chain(ips.iter().map(|i| i.to_string()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::History(HistoryCommand::Import(args)) => {
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(history_cmd::import(&args)) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Review(args) => {
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
            ExitCode::from(runtime.block_on(review::run(&args, color)))
        }
        Command::Report(args) => {
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            ExitCode::from(runtime.block_on(report::run(&args, progress)))
        }
        Command::History(HistoryCommand::Show(args)) => match history_cmd::load_for_show(&args) {
            Ok(snap) => {
                print!("{}", history_cmd::show(&args, &snap));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Mesh(cmd) => {
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let out = match &cmd {
                MeshCommand::Show(args) => runtime.block_on(mesh_cmd::show(args)),
                MeshCommand::Suggest(args) => runtime.block_on(mesh_cmd::suggest(args)),
            };
            match out {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Spec(SpecCommand::Check { paths }) => {
            let (checked, errors) = specs::check_paths(&paths);
            for e in &errors {
                eprintln!("{e}");
            }
            if errors.is_empty() {
                println!("{checked} spec file(s) OK");
                ExitCode::SUCCESS
            } else {
                eprintln!("{} error(s) in {checked} spec file(s)", errors.len());
                ExitCode::FAILURE
            }
        }
    }
}
