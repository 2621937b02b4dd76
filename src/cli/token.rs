//! `runyard token create`: a new bearer token, printed once.

use std::path::PathBuf;

use clap::Subcommand;

use crate::auth::{create_token, Role};

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token, print it once, and add its SHA-256 to the tokens file.
    Create {
        /// A name for the token, shown in logs and errors instead of the token.
        #[arg(long)]
        name: String,
        /// What the token may do: read, write (also submit, cancel, pause, resume) or
        /// admin (also command runs).
        #[arg(long, value_enum)]
        role: Role,
        /// The tokens file the server reads (auth.tokens_file); created when missing.
        #[arg(long)]
        tokens_file: PathBuf,
    },
}

/// Runs a token command.
pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            role,
            tokens_file,
        } => {
            let token = create_token(&tokens_file, &name, role)?;
            // The token on stdout alone, so scripts can capture it; the rest on stderr.
            println!("{token}");
            eprintln!(
                "runyard: token `{name}` ({}) added to {}; it is shown only this once",
                role.name(),
                tokens_file.display()
            );
            Ok(())
        }
    }
}
