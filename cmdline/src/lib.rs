//! What relsync's two command-line programs (`relsync` and `cdn-publisher`) share: shell
//! completions and man pages generated from their clap definitions ([`manual`]), and a quiet
//! end when stdout is a closed pipe ([`exit_quietly_on_a_closed_stdout`]).

pub mod manual;

/// A closed stdout (`| head`) is a reader that has seen enough: `println!` then panics with
/// "failed printing to stdout: Broken pipe"; after this call such a panic exits 0, quietly,
/// as a pipe's end does for any Unix tool. Other panics report as before.
pub fn exit_quietly_on_a_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if is_closed_stdout(message) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Whether a panic message is `println!`'s on a closed pipe.
fn is_closed_stdout(message: &str) -> bool {
    message.starts_with("failed printing to stdout") && message.contains("Broken pipe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_stdout_is_quiet() {
        assert!(is_closed_stdout(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(!is_closed_stdout(
            "failed printing to stdout: No space left on device"
        ));
        assert!(!is_closed_stdout("index out of bounds"));
    }
}
