//! `INFO [section ...]`: `# Server` (the fields tools read, as Redis 7.0.15
//! prints them), `# Clients`, `# Memory` (`used_memory` is the keyspace's
//! estimate of stored data, the figure `maxmemory` is checked against),
//! `# Cluster` and `# Keyspace`. A verbatim string in RESP3.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{Frame, Server, Session};

/// The Redis version this port answers as.
pub const REDIS_VERSION: &str = "7.0.15";

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let wants = |section: &str| {
        args.len() == 1
            || args[1..].iter().any(|a| {
                a.eq_ignore_ascii_case(section.as_bytes())
                    || a.eq_ignore_ascii_case(b"all")
                    || a.eq_ignore_ascii_case(b"everything")
                    || a.eq_ignore_ascii_case(b"default")
            })
    };
    let mut sections = Vec::new();
    if wants("server") {
        let uptime = server.started.elapsed().as_secs();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        sections.push(format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\n\
             redis_build_id:0\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\n\
             multiplexing_api:epoll\r\nprocess_id:{}\r\nrun_id:casebook-uber-geo-resp\r\ntcp_port:{}\r\n\
             server_time_usec:{now}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n\
             executable:casebook\r\nconfig_file:\r\n",
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            server.port.load(Ordering::Relaxed),
            uptime / 86_400,
        ));
    }
    if wants("clients") {
        sections.push(format!(
            "# Clients\r\nconnected_clients:{}\r\n",
            server.clients.load(Ordering::Relaxed)
        ));
    }
    if wants("memory") {
        let used = server.keys.read().used_bytes();
        sections.push(format!(
            "# Memory\r\nused_memory:{used}\r\nmaxmemory:{}\r\nmaxmemory_policy:noeviction\r\n\
             request_buffer_bytes:{}\r\nrequest_buffer_budget_bytes:{}\r\n",
            server.limits.max_memory_bytes,
            server.buffered.used(),
            server.limits.buffer_budget_bytes,
        ));
    }
    if wants("cluster") {
        // Client libraries read `cluster_enabled` (redis-py's test suite does).
        sections.push("# Cluster\r\ncluster_enabled:0\r\n".to_owned());
    }
    if wants("keyspace") {
        let keys = server.keys.read().len();
        let mut s = "# Keyspace\r\n".to_owned();
        if keys > 0 {
            s.push_str(&format!("db0:keys={keys},expires=0,avg_ttl=0\r\n"));
        }
        sections.push(s);
    }
    Frame::Verbatim(Bytes::from(sections.join("\r\n")))
}
