//! The terminal side of the interactive modes (`-cnv`, `-i`): Ctrl-C as
//! llama.cpp's users expect it, and `--color`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::run::print_timings;
use crate::session::Timings;
use crate::{Error, Result};

/// Exit status after Ctrl-C at the prompt (128 + SIGINT, as shells say).
const INTERRUPT_EXIT: i32 = 130;

/// What Ctrl-C does: during a reply it sets a flag the generation loop
/// checks (the reply stops, the prompt returns); at the prompt, or a second
/// time before the reply stopped, it prints the timings and exits.
pub struct Interrupts {
    state: Arc<SharedState>,
}

#[derive(Default)]
struct SharedState {
    generating: AtomicBool,
    stop: AtomicBool,
    /// Load time and the timings after the last reply, printed on exit.
    timings: Mutex<(Duration, Timings)>,
}

impl Interrupts {
    /// Takes over SIGINT for the rest of the process (a thread waits for
    /// it, so a blocking read of stdin does not delay the exit).
    pub fn install(load_time: Duration) -> Result<Interrupts> {
        let state = Arc::new(SharedState {
            timings: Mutex::new((load_time, Timings::default())),
            ..SharedState::default()
        });
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])
            .map_err(|e| Error::InvalidArgument(format!("cannot handle Ctrl-C: {e}")))?;
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for _ in signals.forever() {
                if shared.generating.load(Ordering::SeqCst)
                    && !shared.stop.swap(true, Ordering::SeqCst)
                {
                    continue;
                }
                std::io::stdout().flush().ok();
                match shared.timings.lock() {
                    Ok(t) => print_timings(t.0, &t.1),
                    Err(p) => print_timings(p.get_ref().0, &p.get_ref().1),
                }
                std::process::exit(INTERRUPT_EXIT);
            }
        });
        Ok(Interrupts { state })
    }

    /// A reply starts: Ctrl-C now stops it.
    pub fn begin_reply(&self) {
        self.state.stop.store(false, Ordering::SeqCst);
        self.state.generating.store(true, Ordering::SeqCst);
    }

    /// Whether Ctrl-C asked the current reply to stop.
    pub fn stop_requested(&self) -> bool {
        self.state.stop.load(Ordering::SeqCst)
    }

    /// The reply ended (the prompt is next): Ctrl-C now exits, printing
    /// `timings`. Returns whether Ctrl-C stopped the reply.
    pub fn end_reply(&self, timings: &Timings) -> bool {
        self.state.generating.store(false, Ordering::SeqCst);
        match self.state.timings.lock() {
            Ok(mut t) => t.1 = timings.clone(),
            Err(p) => p.into_inner().1 = timings.clone(),
        }
        self.state.stop.swap(false, Ordering::SeqCst)
    }
}

/// `--color`: the prompt echo in yellow and the user's input in green, as
/// llama.cpp; the model's text in the terminal's color.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Color {
    on: bool,
}

const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";
const RESET: &str = "\x1b[0m";

impl Color {
    /// `on`, `off`, or `auto` (on when stdout is a terminal).
    pub fn parse(s: &str) -> Result<Color> {
        let on = match s {
            "on" => true,
            "off" => false,
            "auto" => std::io::stdout().is_terminal(),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "--color {other:?}: expected on, off or auto"
                )))
            }
        };
        Ok(Color { on })
    }

    /// The prompt as echoed.
    pub fn prompt(self, text: &str) -> String {
        if self.on {
            format!("{YELLOW}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    /// Printed (on stderr, which shares the terminal) before the user
    /// types: the terminal echoes the input in green.
    pub fn input_start(self) -> &'static str {
        if self.on {
            GREEN
        } else {
            ""
        }
    }

    /// Printed once the line is read.
    pub fn input_end(self) -> &'static str {
        if self.on {
            RESET
        } else {
            ""
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_wraps_only_when_on() {
        let on = Color::parse("on").unwrap();
        assert_eq!(on.prompt("hi"), "\x1b[33mhi\x1b[0m");
        assert_eq!(on.input_start(), GREEN);
        let off = Color::parse("off").unwrap();
        assert_eq!(off.prompt("hi"), "hi");
        assert_eq!(off.input_end(), "");
        assert!(Color::parse("maybe").is_err());
    }
}
