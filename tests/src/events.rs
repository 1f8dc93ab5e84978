//! An event subscriber (`ctr events`, `wharf events`) whose output a test reads as it comes, so
//! that the test waits until the subscription is in place, and until an event arrived, instead
//! of sleeping and hoping (a loaded machine makes any fixed sleep too short).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long [`Subscriber::subscribe`] and [`Subscriber::wait_for`] wait before they fail.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Subscriber {
    child: Child,
    text: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Starts `cmd` with its stdout read line by line on a thread.
    pub fn spawn(mut cmd: Command) -> Subscriber {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the event subscriber");
        let out = child.stdout.take().expect("piped stdout");
        let text = Arc::new(Mutex::new(String::new()));
        let t = text.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                t.push_str(&line);
                t.push('\n');
            }
        });
        Subscriber {
            child,
            text,
            reader: Some(reader),
        }
    }

    /// What the subscriber printed so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes sure the subscription is in place: runs `probe` (something that publishes an
    /// event), again every half second, until the output satisfies `seen`.
    pub fn subscribe(&self, mut probe: impl FnMut(), seen: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            probe();
            if self.poll(&seen, Duration::from_millis(500)).is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the subscriber never saw the probe's event: {}",
                self.text()
            );
        }
    }

    /// Waits until the output satisfies `seen`; the output.
    pub fn wait_for(&self, what: &str, seen: impl Fn(&str) -> bool) -> String {
        self.poll(&seen, PATIENCE)
            .unwrap_or_else(|| panic!("no {what} in: {}", self.text()))
    }

    /// The output once it satisfies `seen`, or None after `patience`.
    fn poll(&self, seen: impl Fn(&str) -> bool, patience: Duration) -> Option<String> {
        let deadline = Instant::now() + patience;
        loop {
            let text = self.text();
            if seen(&text) {
                return Some(text);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Ends the subscriber; all it printed.
    pub fn stop(mut self) -> String {
        self.end();
        self.text()
    }

    fn end(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.end();
    }
}
