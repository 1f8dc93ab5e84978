//! Threads the shim starts around container creation.
//!
//! libcontainer clones the container's processes from this multi-threaded process, and the
//! cloned child later calls `std::process::exit`, whose clean-up takes a std-internal lock that a
//! thread holds while it starts or exits (its stack-guard record). A clone taken at that moment
//! leaves the child blocked on that lock forever and the task's Create never returns (seen about
//! once in a thousand creates under load). So threads are only handed back once running, and the
//! short-lived ones park instead of exiting.

use std::io;
use std::sync::mpsc;

/// Spawns `f` on a named thread and returns once the thread runs (its start-up is done).
pub fn spawn_ready<F>(name: &str, stack: usize, f: F) -> io::Result<()>
where
    F: FnOnce() + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(stack)
        .spawn(move || {
            let _ = tx.send(());
            f();
        })?;
    rx.recv()
        .map_err(|_| io::Error::other(format!("thread {name} did not start")))
}

/// Parks the calling thread for good: a helper thread that has done its work stays (a few KiB)
/// rather than exit while a container may be being cloned.
pub fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}
