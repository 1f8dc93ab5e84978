//! Single-use, short-lived tokens naming a streaming request, as the kubelet's streaming server
//! hands them out: the RPC stores the validated request and answers a URL with the token; the
//! first HTTP request with it takes it away.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

/// How long a token is good for (the kubelet's cache TTL).
pub const TTL: Duration = Duration::from_secs(60);
/// Tokens outstanding at once; more are refused (the kubelet's in-flight limit).
pub const MAX_IN_FLIGHT: usize = 1000;

pub struct Tokens<T> {
    ttl: Duration,
    map: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> Tokens<T> {
    pub fn new(ttl: Duration) -> Tokens<T> {
        Tokens {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `v` under a new random token; None when too many are outstanding.
    pub fn insert(&self, v: T) -> std::io::Result<Option<String>> {
        let mut raw = [0u8; 8];
        getrandom(&mut raw)?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        m.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        if m.len() >= MAX_IN_FLIGHT {
            return Ok(None);
        }
        m.insert(token.clone(), (now, v));
        Ok(Some(token))
    }

    /// Takes the request of a token that is known and not expired.
    pub fn take(&self, token: &str) -> Option<T> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (at, v) = m.remove(token)?;
        (at.elapsed() < self.ttl).then_some(v)
    }
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_expire() {
        let t = Tokens::new(Duration::from_millis(50));
        let a = t.insert(1).unwrap().unwrap();
        let b = t.insert(2).unwrap().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 11);
        assert_eq!(t.take(&a), Some(1));
        assert_eq!(t.take(&a), None);
        assert_eq!(t.take("nope"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.take(&b), None);
    }
}
