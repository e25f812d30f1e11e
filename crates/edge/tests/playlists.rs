//! Playlists through the tiers: rewritten and signed per response from the
//! original the cache keeps; a player following the rewritten URLs through an ISP
//! cache and a regional edge; playlists refreshed after their TTL, served stale
//! while the upstream fails.

mod support;

use std::sync::Arc;
use std::time::Duration;

use casebook_edge::cdn::Upstream;
use http::{Method, StatusCode};
use support::{Origin, TierUnderTest, config, header, serve_origin, signing_key};

const MASTER: &str = "#EXTM3U\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n\
360p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=2800000,RESOLUTION=1280x720\n\
720p/index.m3u8\n";

const MEDIA: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n\
#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXTINF:4.000,\nseg00001.ts\n#EXTINF:4.000,\nseg00002.ts\n#EXT-X-ENDLIST\n";

fn publish(origin: &Origin) {
    origin.put("titles/t/master.m3u8", MASTER);
    for rendition in ["360p", "720p"] {
        origin.put(&format!("titles/t/{rendition}/index.m3u8"), MEDIA);
        origin.put(
            &format!("titles/t/{rendition}/init.mp4"),
            format!("init {rendition}"),
        );
        for n in 1..=2 {
            origin.put(
                &format!("titles/t/{rendition}/seg{n:05}.ts"),
                format!("{rendition} segment {n}"),
            );
        }
    }
}

/// The URI lines of a playlist and the `URI="…"` values of its tags.
fn uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(start) = line.find("URI=\"") {
            let rest = &line[start + 5..];
            out.push(rest[..rest.find('"').unwrap()].to_owned());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            out.push(line.to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_are_rewritten_per_request_from_the_cached_original() {
    let origin = Arc::new(Origin::default());
    publish(&origin);
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let tier = TierUnderTest::start(config(address)).await;
    let key = signing_key();
    let path = "/o/titles/t/master.m3u8";

    let mut seen_etags = Vec::new();
    for exp in [tier.now_secs() + 100, tier.now_secs() + 200] {
        let response = tier
            .send(Method::GET, &format!("{path}?{}", key.sign(path, exp)), &[])
            .await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(
            header(&response, "content-type"),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(
            header(&response, "cache-control"),
            Some("public, max-age=2")
        );
        assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
        let text = String::from_utf8(response.body.to_vec()).unwrap();
        let found = uris(&text);
        assert_eq!(found.len(), 2);
        for (uri, rendition) in found.iter().zip(["360p", "720p"]) {
            let (uri_path, query) = uri.split_once('?').unwrap();
            assert_eq!(uri_path, format!("/o/titles/t/{rendition}/index.m3u8"));
            assert_eq!(
                key.verify_expiry(uri_path, Some(query), 0),
                Ok(exp),
                "signed with the request's exp"
            );
        }
        // Tags and structure are kept.
        assert_eq!(text.lines().count(), MASTER.lines().count());
        assert!(text.contains("#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n"));
        seen_etags.push(header(&response, "etag").unwrap().to_owned());
    }
    assert_ne!(
        seen_etags[0], seen_etags[1],
        "a rewrite per expiry has its own ETag"
    );
    assert_eq!(
        origin.hits("titles/t/master.m3u8"),
        1,
        "the original was cached once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_follows_signed_urls_through_the_isp_cache_and_the_edge() {
    let origin = Arc::new(Origin::default());
    publish(&origin);
    let (origin_address, _) =
        serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let mut edge_config = config(origin_address);
    edge_config.service = "cdn-edge".into();
    let edge = TierUnderTest::start(edge_config).await;
    let mut isp_config = config(origin_address);
    isp_config.service = "cdn-isp".into();
    isp_config.upstream = Upstream::Url(format!("http://{}", edge.address));
    let isp = TierUnderTest::start(isp_config).await;

    // The player: the master, then every playlist and object it names, as given.
    let master = isp.get("titles/t/master.m3u8", &[]).await;
    assert_eq!(master.status, StatusCode::OK);
    let mut pending = uris(std::str::from_utf8(&master.body).unwrap());
    let mut fetched = 0;
    while let Some(url) = pending.pop() {
        let response = isp.send(Method::GET, &url, &[]).await;
        assert_eq!(response.status, StatusCode::OK, "{url}");
        fetched += 1;
        if url.contains(".m3u8") {
            let text = std::str::from_utf8(&response.body).unwrap();
            for uri in uris(text) {
                assert!(uri.starts_with("/o/titles/t/"), "{uri}");
                pending.push(uri);
            }
        } else {
            let key = url.split('?').next().unwrap().trim_start_matches("/o/");
            let expected = origin_body(key);
            assert_eq!(response.body.as_ref(), expected.as_bytes(), "{key}");
        }
    }
    assert_eq!(
        fetched,
        2 + 2 * 3,
        "two media playlists, an init and two segments each"
    );
    // Every object went origin → edge → ISP once.
    for key in [
        "titles/t/master.m3u8",
        "titles/t/720p/index.m3u8",
        "titles/t/360p/seg00002.ts",
    ] {
        assert_eq!(origin.hits(key), 1, "{key}");
    }
    assert_eq!(
        edge.stats().await.refused_signature,
        0,
        "the ISP forwarded valid signatures"
    );
    assert_eq!(isp.stats().await.misses, 9);
}

fn origin_body(key: &str) -> String {
    let parts: Vec<&str> = key.split('/').collect();
    let rendition = parts[2];
    let name = parts[3];
    if name == "init.mp4" {
        format!("init {rendition}")
    } else {
        let n: u32 = name
            .trim_start_matches("seg")
            .trim_end_matches(".ts")
            .parse()
            .unwrap();
        format!("{rendition} segment {n}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_refresh_after_their_ttl_and_go_stale_while_upstream_fails() {
    let origin = Arc::new(Origin::default());
    publish(&origin);
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let tier = TierUnderTest::start(config(address)).await;
    let media = "titles/t/720p/index.m3u8";
    let segment = "titles/t/720p/seg00001.ts";
    assert_eq!(tier.get(media, &[]).await.status, StatusCode::OK);
    assert_eq!(tier.get(segment, &[]).await.status, StatusCode::OK);
    tier.clock.advance(Duration::from_secs(1));
    assert_eq!(
        header(&tier.get(media, &[]).await, "x-cache"),
        Some("hit-memory")
    );
    assert_eq!(origin.hits(media), 1);

    tier.clock.advance(Duration::from_secs(2));
    let refreshed = tier.get(media, &[]).await;
    assert_eq!(header(&refreshed, "x-cache"), Some("miss"));
    assert_eq!(origin.hits(media), 2);

    origin.fail(true);
    tier.clock.advance(Duration::from_secs(3));
    let stale = tier.get(media, &[]).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(header(&stale, "x-cache"), Some("stale"));
    assert!(
        std::str::from_utf8(&stale.body)
            .unwrap()
            .contains("/o/titles/t/720p/seg00001.ts?exp=")
    );
    // Segments never go stale.
    tier.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        header(&tier.get(segment, &[]).await, "x-cache"),
        Some("hit-memory")
    );
    assert_eq!(tier.stats().await.stale_served, 1);
}
