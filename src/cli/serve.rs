//! `runyard serve`.

use anyhow::Context as _;

use super::ServeArgs;
use crate::config::{Config, Overrides};
use crate::startup::{Application, StartOptions};

/// Loads the configuration, then runs the server until it is stopped.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        bind: args.bind,
        data_dir: args.data_dir,
        tokens_file: args.tokens_file,
        allow_commands: args.allow_commands,
    };
    let config =
        Config::load(args.config.as_deref(), &overrides).context("invalid configuration")?;
    crate::telemetry::init(&config.log.filter);
    actix_web::rt::System::new().block_on(async move {
        let options = StartOptions {
            repair: args.repair,
            keep_signals: false,
            nodes: 1,
            node_address: None,
        };
        let app = Application::build_with(config, options).await?;
        // One line on stdout, so scripts and tests learn the port when binding port 0.
        println!("runyard listening on http://{}", app.address());
        tracing::info!(address = %app.address(), "listening");
        app.run_until_stopped()
            .await
            .context("server stopped with an error")
    })
}
