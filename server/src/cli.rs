//! `weft-server token …`: managing API tokens from the command line, against the same
//! database the server uses (`WEFT_DATABASE`), whether or not a server is running.
//!
//! ```text
//! weft-server token create --name NAME [--admin] [--read-only]   prints the token, once
//!                                    (--admin --read-only: an auditor, who sees all and changes nothing)
//! weft-server token list                                         names, roles, dates
//! weft-server token revoke NAME                                  refused within a second
//! ```

use std::fmt::Write as _;

use crate::{
    auth::{new_token, valid_name},
    startup::open_store,
    store::now_millis,
};
use weft_app::format::utc;

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Serve (no arguments).
    Serve,
    /// `token create`.
    Create {
        /// The principal's name.
        name: String,
        /// Sees everything.
        admin: bool,
        /// May only read.
        read_only: bool,
    },
    /// `token list`.
    List,
    /// `token revoke NAME`.
    Revoke(String),
}

/// How to use the command line.
pub const USAGE: &str = "usage:
  weft-server                                                  serve (settings from WEFT_* variables)
  weft-server token create --name NAME [--admin] [--read-only] make an API token (printed once)
  weft-server token list                                       list the tokens
  weft-server token revoke NAME                                revoke a token";

/// Reads the arguments (without the program's name).
pub fn parse(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => Ok(Command::Serve),
        ["token", "list"] => Ok(Command::List),
        ["token", "revoke", name] => Ok(Command::Revoke((*name).to_owned())),
        ["token", "create", rest @ ..] => {
            let (mut name, mut admin, mut read_only) = (None, false, false);
            let mut rest = rest.iter();
            while let Some(arg) = rest.next() {
                match *arg {
                    "--admin" => admin = true,
                    "--read-only" => read_only = true,
                    "--name" => name = rest.next().map(|name| (*name).to_owned()),
                    other => match other.strip_prefix("--name=") {
                        Some(value) => name = Some(value.to_owned()),
                        None => return Err(format!("unknown option `{other}`")),
                    },
                }
            }
            let name = name.ok_or("token create needs --name NAME")?;
            if !valid_name(&name) {
                return Err(format!(
                    "`{name}` is not a token name: use 1 to 64 letters, digits, `-`, `_`, `.` or `@`"
                ));
            }
            Ok(Command::Create { name, admin, read_only })
        }
        _ => Err("unknown command".to_owned()),
    }
}

/// Carries out a token command against `database`; answers what to print.
pub async fn run(command: Command, database: &str) -> anyhow::Result<String> {
    let store = open_store(database).await?;
    Ok(match command {
        Command::Serve => String::new(),
        Command::Create { name, admin, read_only } => {
            let token = new_token(&name, admin, read_only);
            if !store.insert_token(token.record).await? {
                anyhow::bail!("a token named `{name}` exists; revoke it first to replace it");
            }
            format!(
                "{}\n\nThe token for `{name}` is shown once; the database keeps only its hash.\n",
                token.text
            )
        }
        Command::List => {
            let mut out = format!("{:<20} {:<10} {:<20} {}\n", "NAME", "ROLE", "CREATED (UTC)", "REVOKED");
            for token in store.tokens().await? {
                let role = match (token.admin, token.read_only) {
                    (true, true) => "auditor",
                    (true, false) => "admin",
                    (false, true) => "read-only",
                    (false, false) => "member",
                };
                let revoked = token.revoked_at.map_or_else(|| "-".to_owned(), utc);
                let _ = writeln!(
                    out,
                    "{:<20} {:<10} {:<20} {}",
                    token.name,
                    role,
                    utc(token.created_at),
                    revoked
                );
            }
            out
        }
        Command::Revoke(name) => {
            if !store.revoke_token(&name, now_millis()).await? {
                anyhow::bail!("no live token is named `{name}`");
            }
            format!("revoked `{name}`: requests with it are refused within a second\n")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_token_commands_parse() {
        assert_eq!(parse(&[]), Ok(Command::Serve));
        assert_eq!(
            parse(&args("token create --name alice --read-only")),
            Ok(Command::Create {
                name: "alice".into(),
                admin: false,
                read_only: true
            })
        );
        assert_eq!(
            parse(&args("token create --name=root --admin")),
            Ok(Command::Create {
                name: "root".into(),
                admin: true,
                read_only: false
            })
        );
        assert_eq!(parse(&args("token revoke alice")), Ok(Command::Revoke("alice".into())));
        assert_eq!(parse(&args("token list")), Ok(Command::List));
        assert!(parse(&args("token create")).is_err());
        // An auditor: sees everything, changes nothing.
        assert_eq!(
            parse(&args("token create --name audit --admin --read-only")),
            Ok(Command::Create {
                name: "audit".into(),
                admin: true,
                read_only: true
            })
        );
        assert!(parse(&args("token create --name a/b")).is_err());
        assert!(parse(&args("serve now")).is_err());
    }
}
