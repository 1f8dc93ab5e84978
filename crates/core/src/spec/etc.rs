//! Contents of the `/etc/hosts` and `/etc/resolv.conf` files a container with its own network
//! namespace gets (the caller writes them and bind-mounts them in), formatted like docker's.

use std::fmt::Write as _;

/// Public resolvers used when the host only lists loopback ones (a local stub resolver such as
/// systemd-resolved's 127.0.0.53 is unreachable from the container's network namespace).
pub const FALLBACK_NAMESERVERS: &[&str] = &["8.8.8.8", "8.8.4.4"];

/// `/etc/hosts`: the loopback entries, `ip hostname` (or the hostname on 127.0.0.1 when the
/// container has no address yet), then `extra` `(host, ip)` pairs (`--add-host`).
pub fn hosts(hostname: &str, ip: Option<&str>, extra: &[(String, String)]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        let _ = writeln!(s, "{}\t{hostname}", ip.unwrap_or("127.0.0.1"));
    }
    for (host, addr) in extra {
        let _ = writeln!(s, "{addr}\t{host}");
    }
    s
}

fn is_loopback(ns: &str) -> bool {
    match ns.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        // Scoped IPv6 (`fe80::1%eth0`) and the like: not loopback.
        Err(_) => false,
    }
}

/// `/etc/resolv.conf` for a container in its own network namespace, from the host's file:
/// nameservers are `dns` if given, else the host's without loopback addresses (falling back to
/// [`FALLBACK_NAMESERVERS`] when none remain); `search` and `options` replace the host's when
/// given (a lone `"."` search domain clears them, as with docker's `--dns-search .`).
pub fn resolv_conf(
    host_resolv: &str,
    dns: &[String],
    search: &[String],
    options: &[String],
) -> String {
    let mut host_ns = Vec::new();
    let mut host_search: Vec<String> = Vec::new();
    let mut host_opts: Vec<String> = Vec::new();
    for line in host_resolv.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => {
                if let Some(ns) = f.next() {
                    host_ns.push(ns.to_string());
                }
            }
            // The last search/domain line wins, as in resolv.conf(5).
            Some("search") | Some("domain") => host_search = f.map(str::to_string).collect(),
            Some("options") => host_opts.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    let nameservers: Vec<String> = if !dns.is_empty() {
        dns.to_vec()
    } else {
        let ns: Vec<String> = host_ns.into_iter().filter(|n| !is_loopback(n)).collect();
        if ns.is_empty() {
            FALLBACK_NAMESERVERS.iter().map(|s| s.to_string()).collect()
        } else {
            ns
        }
    };
    let search: Vec<String> = if search.is_empty() {
        host_search
    } else if search.len() == 1 && search[0] == "." {
        Vec::new()
    } else {
        search.to_vec()
    };
    let options = if options.is_empty() {
        host_opts
    } else {
        options.to_vec()
    };

    let mut s = String::new();
    if !search.is_empty() {
        let _ = writeln!(s, "search {}", search.join(" "));
    }
    for ns in &nameservers {
        let _ = writeln!(s, "nameserver {ns}");
    }
    if !options.is_empty() {
        let _ = writeln!(s, "options {}", options.join(" "));
    }
    s
}
