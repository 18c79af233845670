//! Errors in `FERRY_*` environment variables name the variable: clap reports a bad value from
//! the environment as if it were the flag (`--listen`), which sends a person looking at a command
//! line that has no such flag.

use clap::error::{ContextKind, ContextValue};

/// `e`, reworded to name the environment variable when its bad value came from one.
pub fn name_the_variable(e: clap::Error, cmd: &clap::Command) -> clap::Error {
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return e;
    };
    // `--listen <IP:PORT>` → `listen`.
    let Some(long) = arg
        .strip_prefix("--")
        .map(|a| a.split([' ', '=']).next().unwrap_or(a))
    else {
        return e;
    };
    let given_as_flag = std::env::args()
        .skip(1)
        .any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
    let Some(var) = env_of(cmd, long) else {
        return e;
    };
    if given_as_flag || std::env::var_os(&var).is_none_or(|v| v != value.as_str()) {
        return e;
    }
    let text = e.render().to_string().replacen(
        &format!("for '{arg}'"),
        &format!("in environment variable {var} (read for '{arg}')"),
        1,
    );
    let text = text.strip_prefix("error: ").unwrap_or(&text).to_owned();
    clap::Error::raw(e.kind(), text)
}

/// The environment variable of the flag `--long` in `cmd` or any subcommand.
fn env_of(cmd: &clap::Command, long: &str) -> Option<String> {
    cmd.get_arguments()
        .filter(|a| a.get_long() == Some(long))
        .find_map(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .or_else(|| cmd.get_subcommands().find_map(|c| env_of(c, long)))
}
