//! Pause points for crash tests. With `ALEXNET_PAUSE_AT=<label>` in the environment, the
//! process stops the first time it reaches the point named `<label>` (for example
//! `checkpoint-committed:epoch-0001`, or `write-tmp:epoch-0001.state.json`: a temporary
//! file written and synced, not yet renamed into place): it creates the file named by
//! `ALEXNET_PAUSE_MARKER` and sleeps until it is killed. The crash test kills it there with
//! SIGKILL and checks that resuming loses nothing. Without the variable a point costs a
//! comparison with an empty string.

use std::sync::OnceLock;

/// The label to pause at, read once.
fn target() -> &'static str {
    static TARGET: OnceLock<String> = OnceLock::new();
    TARGET.get_or_init(|| std::env::var("ALEXNET_PAUSE_AT").unwrap_or_default())
}

/// Pauses forever if `kind:name` is the label asked for (see the module docs).
pub(crate) fn pause_point(kind: &str, name: &str) {
    let target = target();
    if target.is_empty() || target.len() != kind.len() + 1 + name.len() || !target.starts_with(kind) {
        return;
    }
    if target[kind.len() + 1..] != *name || target.as_bytes()[kind.len()] != b':' {
        return;
    }
    if let Some(marker) = std::env::var_os("ALEXNET_PAUSE_MARKER") {
        let _ = std::fs::write(marker, target);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
