//! The site's files as a browser gets them: the wasm, its glue and the stylesheet under
//! names holding their content's hash, cached for a year as immutable, and sent as
//! brotli or gzip to whoever accepts it; pages and JSON answers compressed too.

use std::{io::Read, net::SocketAddr};

use reqwest::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING};
use weft_server::config::Settings;
use weft_tests::spawn_app_on;

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).expect("gzip");
    out
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliDecompress(&mut &bytes[..], &mut out).expect("brotli");
    out
}

#[tokio::test]
async fn the_wasm_is_sent_compressed_under_its_hashed_name_and_cached_for_a_year() {
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    // Compressible, like a real build's wasm, and large enough to matter.
    let wasm: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
    std::fs::write(pkg.join("weft.wasm"), &wasm).unwrap();
    std::fs::write(
        pkg.join("weft.js"),
        "export default async function init() {}\nexport function hydrate() {}\n",
    )
    .unwrap();
    std::fs::write(pkg.join("weft.css"), "body { margin: 0; }\n".repeat(50)).unwrap();
    // A chunk split off for an island, which the split loader fetches by this name.
    let chunk: Vec<u8> = wasm.iter().rev().take(100_000).copied().collect();
    std::fs::write(pkg.join("split_start.wasm"), &chunk).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
    settings.site_root = site.path().to_owned();
    let app = spawn_app_on(dir.path().join("weft.db"), settings).await;
    let get = |path: &str, encoding: Option<&str>| {
        let mut request = app.client.get(format!("{}{path}", app.address));
        if let Some(encoding) = encoding {
            request = request.header(ACCEPT_ENCODING, encoding);
        }
        request.send()
    };

    // The page names the files by hash, and is itself compressed.
    let page = get("/", Some("br, gzip")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()[CONTENT_ENCODING], "br");
    let html = String::from_utf8(unbrotli(&page.bytes().await.unwrap())).unwrap();
    let wasm_path = html
        .split('"')
        .find(|part| part.starts_with("/pkg/weft.") && part.ends_with(".wasm"))
        .unwrap_or_else(|| panic!("no hashed wasm in {html}"))
        .to_owned();
    assert_eq!(wasm_path.len(), "/pkg/weft.0123456789abcdef.wasm".len(), "{wasm_path}");
    for stylesheet in ["/pkg/weft.", ".css\""] {
        assert!(html.contains(stylesheet), "{html}");
    }
    assert!(
        !html.contains("/pkg/weft.css"),
        "the stylesheet has its hashed name too"
    );

    for (accepts, encoding) in [("br, gzip", "br"), ("gzip", "gzip")] {
        let sent = get(&wasm_path, Some(accepts)).await.unwrap();
        assert_eq!(sent.status(), 200);
        assert_eq!(sent.headers()[CONTENT_ENCODING], encoding);
        assert_eq!(sent.headers()[CACHE_CONTROL], "public, max-age=31536000, immutable");
        assert_eq!(sent.headers()["content-type"], "application/wasm");
        let body = sent.bytes().await.unwrap();
        assert!(
            body.len() < wasm.len() / 4,
            "{encoding}: {} bytes on the wire",
            body.len()
        );
        let plain = if encoding == "br" {
            unbrotli(&body)
        } else {
            gunzip(&body)
        };
        assert_eq!(plain, wasm, "{encoding}");
    }
    // Asked for nothing, the file as it is; under its plain name, revalidated each time.
    let sent = get(&wasm_path, None).await.unwrap();
    assert!(sent.headers().get(CONTENT_ENCODING).is_none());
    assert_eq!(sent.bytes().await.unwrap(), wasm);
    let plain = get("/pkg/weft.wasm", Some("gzip")).await.unwrap();
    assert_eq!(plain.status(), 200);
    assert_eq!(plain.headers()[CACHE_CONTROL], "no-cache");
    // The glue keeps its plain name (the split loader imports it by that name).
    assert!(html.contains("\"/pkg/weft.js\""), "{html}");
    // A split chunk is sent compressed under its own name, revalidated each time.
    let sent = get("/pkg/split_start.wasm", Some("br, gzip")).await.unwrap();
    assert_eq!(sent.status(), 200);
    assert_eq!(sent.headers()[CONTENT_ENCODING], "br");
    assert_eq!(sent.headers()[CACHE_CONTROL], "no-cache");
    assert_eq!(unbrotli(&sent.bytes().await.unwrap()), chunk);
    // A stale hash (the build before) is not found rather than served wrong.
    let stale = get("/pkg/weft.0000000000000000.wasm", Some("gzip")).await.unwrap();
    assert_eq!(stale.status(), 404);

    // JSON answers are compressed too.
    let presets = get("/presets", Some("gzip")).await.unwrap();
    assert_eq!(presets.headers()[CONTENT_ENCODING], "gzip");
    let listed: serde_json::Value = serde_json::from_slice(&gunzip(&presets.bytes().await.unwrap())).unwrap();
    assert_eq!(listed[0]["name"], "code_review");
}
