//! `wharf system check [--deep] [--repair]`: wharfd's consistency check
//! (`wharf.services.check.v1.Check`), one line per finding and a summary.

use anyhow::Result;
use wharf_api::check::check_client::CheckClient;
use wharf_api::check::CheckRequest;

use crate::client::{Client, Explain};

/// Exit code 0 when nothing remains to fix, 1 when findings remain.
pub async fn check(c: &Client, deep: bool, repair: bool) -> Result<u8> {
    let resp = CheckClient::new(c.channel.clone())
        // Deep checks of large stores take a while to answer.
        .max_decoding_message_size(64 << 20)
        .check(c.req(CheckRequest { deep, repair }))
        .await
        .explain(c, "")?;
    let mut remaining = 0;
    for f in &resp.findings {
        let state = if f.repaired {
            "repaired"
        } else {
            remaining += 1;
            "found"
        };
        println!("{state} {} {}: {}", f.kind, f.subject, f.detail);
    }
    let mut checked: Vec<_> = resp.checked.iter().collect();
    checked.sort();
    let checked: Vec<String> = checked.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "checked {}{}: {} finding(s), {} repaired, {} remaining",
        checked.join(", "),
        if deep { " (digests re-hashed)" } else { "" },
        resp.findings.len(),
        resp.findings.len() - remaining,
        remaining
    );
    Ok(if remaining == 0 { 0 } else { 1 })
}
