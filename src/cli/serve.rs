//! `runyard serve`.

use anyhow::Context as _;

use super::ServeArgs;
use crate::config::{Config, Overrides};
use crate::startup::{Application, StartOptions};

/// Loads the configuration, installs the process's subscriber (logs, and the actors'
/// spans when traces are on), then runs the server until it is stopped.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        bind: args.bind,
        data_dir: args.data_dir,
        tokens_file: args.tokens_file,
        allow_commands: args.allow_commands,
    };
    let config =
        Config::load(args.config.as_deref(), &overrides).context("invalid configuration")?;
    // Started before the subscriber, which exports the actors' spans through it.
    let traces = crate::telemetry::traces::Traces::start(&config.telemetry)?;
    crate::telemetry::init_with_traces(&config.log.filter, traces.as_ref());
    actix_web::rt::System::new().block_on(async move {
        let options = StartOptions {
            repair: args.repair,
            keep_signals: false,
            nodes: 1,
            node_address: None,
            rung_end: None,
        };
        let app = Application::build_with_traces(config, options, traces).await?;
        // One line on stdout, so scripts and tests learn the port when binding port 0.
        println!("runyard listening on http://{}", app.address());
        tracing::info!(address = %app.address(), "listening");
        app.run_until_stopped()
            .await
            .context("server stopped with an error")
    })
}
