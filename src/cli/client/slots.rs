//! `runyard slots`.

use super::api::Client;
use super::common::{print_json, ClientError, Connection, Output, OutputArg};
use super::output::{table, text};

/// Arguments of `runyard slots`.
#[derive(Debug, clap::Args)]
pub struct SlotsArgs {
    /// The server and token.
    #[command(flatten)]
    pub connection: Connection,
    /// `--output`.
    #[command(flatten)]
    pub output: OutputArg,
}

/// Lists the slots from the server's slot ledger.
pub async fn run(args: SlotsArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.connection)?;
    let slots = client.get_json("/api/v1/slots").await?;
    if args.output.output == Output::Json {
        return print_json(&slots);
    }
    let rows: Vec<Vec<String>> = slots
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|slot| {
            vec![
                text(&slot["id"]),
                text(&slot["device"]),
                text(&slot["run_id"]),
                text(&slot["since_seq"]),
            ]
        })
        .collect();
    out!("{}", table(&["ID", "DEVICE", "RUN", "SINCE_SEQ"], &rows));
    Ok(())
}
