//! A panic kept to the one message or request it happened in.
//!
//! A bug that panics while one message is handled must not stall ingest:
//! unwinding through the batch's task would leave every message of the
//! batch unsettled, redelivered, and panicking again. [`catch`] and
//! [`catch_async`] turn the panic into a value the caller can reject the
//! message with (or answer 500 with), naming the panic's message and where
//! it happened.
//!
//! The standard library gives `catch_unwind` the panic's payload only; its
//! location is known only to the panic hook. So the first use installs a
//! hook (once, for the process) that notes the location and message of the
//! thread's last panic before handing the panic to the hook that was there
//! before (which prints or logs it, as it did).

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use futures::FutureExt as _;

/// A panic that was caught: what it said and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked {
    pub message: String,
    /// `file:line:column`, when the hook saw it.
    pub location: Option<String>,
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(at) => write!(f, "panicked at {at}: {}", self.message),
            None => write!(f, "panicked: {}", self.message),
        }
    }
}

impl std::error::Error for Panicked {}

thread_local! {
    /// The last panic on this thread, as the hook saw it.
    static LAST: RefCell<Option<Panicked>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// The longest panic message kept: it goes into a database row and a log
/// line, and a panic may format attacker-chosen input into its message.
const MAX_MESSAGE: usize = 1_024;

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let noted = Panicked {
                message: message_of(info.payload()),
                location: info.location().map(ToString::to_string),
            };
            // `try_with`: a panic while the thread is being torn down has
            // no thread-local left to note it in.
            let _ = LAST.try_with(|last| {
                if let Ok(mut last) = last.try_borrow_mut() {
                    *last = Some(noted);
                }
            });
            previous(info);
        }));
    });
}

/// The text of a panic's payload (`panic!("...")` makes a `&str` or a
/// `String`), shortened to [`MAX_MESSAGE`] bytes.
fn message_of(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)");
    let mut end = text.len().min(MAX_MESSAGE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What the caught payload was, with the location the hook noted for it.
fn caught(payload: Box<dyn Any + Send>) -> Panicked {
    let noted = LAST.with(|last| last.borrow_mut().take());
    let message = message_of(payload.as_ref());
    Panicked {
        location: noted
            .filter(|n| n.message == message)
            .and_then(|n| n.location),
        message,
    }
}

/// Runs `f`, turning a panic in it into [`Panicked`].
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    install_hook();
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(caught)
}

/// Awaits `future`, turning a panic while it is polled into [`Panicked`].
/// Whatever the future held is dropped with the panic: callers use it
/// around work whose state they do not share (a call to a port).
pub async fn catch_async<F: Future>(future: F) -> Result<F::Output, Panicked> {
    install_hook();
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(caught)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_with_its_message_and_location() {
        let line = line!() + 1;
        let caught = catch(|| -> u8 { panic!("bad {}", 42) }).expect_err("panicked");

        assert_eq!(caught.message, "bad 42");
        let at = caught.location.clone().expect("located");
        assert!(at.starts_with(&format!("{}:{line}:", file!())), "{at}");
        assert!(caught.to_string().starts_with("panicked at "), "{caught}");
    }

    #[test]
    fn no_panic_is_the_value() {
        assert_eq!(catch(|| 7), Ok(7));
    }

    #[tokio::test]
    async fn a_panic_while_polled_is_caught() {
        let caught = catch_async(async {
            tokio::task::yield_now().await;
            let empty: Vec<u8> = Vec::new();
            empty[3]
        })
        .await
        .expect_err("panicked");

        assert!(caught.message.contains("index out of bounds"), "{caught}");
        assert!(caught.location.is_some());
    }

    #[test]
    fn a_long_message_is_cut_at_a_character() {
        let long = "é".repeat(MAX_MESSAGE);
        let caught = catch(|| -> () { panic!("{long}") }).expect_err("panicked");

        assert!(caught.message.len() <= MAX_MESSAGE);
        assert!(caught.message.chars().all(|c| c == 'é'));
    }
}
