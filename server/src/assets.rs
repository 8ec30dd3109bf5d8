//! The site's static files (`pkg/`: the wasm, the chunks split off it for the islands,
//! the JavaScript glue, the stylesheet), served so that a page load costs as few bytes as
//! it can: the wasm and the stylesheet under names holding their content's hash, cached
//! by browsers for a year as immutable (a new build has new names), and every file as
//! brotli or gzip copies made once, when the server starts on a new build, then served by
//! tower-http's `ServeDir` to whoever accepts them.
//!
//! Leptos writes the hashed names into each page from a hash file (see
//! [`Assets::hash_file`]); this module computes the hashes itself from the files' content,
//! so the names are right wherever the server binary runs from.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// How long a hashed file may be cached: a year, the most HTTP caches honour.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Files under their plain names may change with the next build: always revalidated.
const REVALIDATE: &str = "no-cache";

/// Files up to this size get brotli's best (and slowest) compression.
const BEST_BROTLI_UP_TO: usize = 4 << 20;

/// The files given hashed names: the key leptos's hash file uses, and the extension.
/// Not the JavaScript glue: the loader of the wasm chunks split off for the islands
/// imports it by its plain name, and under a second name the browser would run a second
/// copy of it, with no wasm loaded.
const HASHED: [&str; 2] = ["wasm", "css"];
/// The files served compressed.
const COMPRESSED: [&str; 3] = ["js", "wasm", "css"];

/// The site's `pkg/` directory as served.
#[derive(Clone)]
pub struct Assets {
    inner: Arc<Inner>,
}

struct Inner {
    /// Each hashed name (`weft.1a2b….wasm`) with the file it stands for (`weft.wasm`).
    hashed: HashMap<String, String>,
    /// The hash file leptos reads the names from, when the site has its files.
    hash_file: Option<PathBuf>,
    /// `pkg/`, with its compressed copies.
    files: ServeDir,
}

impl Assets {
    /// Every script, wasm and stylesheet in `pkg_dir` with compressed copies, made where
    /// missing or older than the file; `output_name`.{wasm,css} hashed, and the hash file
    /// written. A site without those files (an API-only server) is served as it is,
    /// unhashed.
    pub fn prepare(pkg_dir: &Path, output_name: &str) -> Self {
        // Each file read once: compressed, and hashed when it is one of [`HASHED`].
        let mut hashes = HashMap::new();
        for path in site_files(pkg_dir) {
            let content = match std::fs::read(&path) {
                Ok(content) => content,
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "could not read a site file");
                    continue;
                }
            };
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
            if let Some(extension) = HASHED
                .into_iter()
                .find(|extension| name == format!("{output_name}.{extension}"))
            {
                hashes.insert(extension, hex::encode(&Sha256::digest(&content)[..8]));
            }
            if let Err(err) = compress(&path, &content) {
                tracing::warn!(file = %path.display(), error = %err, "could not write compressed copies; serving it uncompressed");
            }
        }
        let mut hashed = HashMap::new();
        let mut lines = String::new();
        for extension in HASHED {
            if let Some(hash) = hashes.get(extension) {
                lines.push_str(&format!("{extension}: {hash}\n"));
                hashed.insert(
                    format!("{output_name}.{hash}.{extension}"),
                    format!("{output_name}.{extension}"),
                );
            }
        }
        let hash_file = (hashed.len() == HASHED.len())
            .then(|| write_hash_file(&lines))
            .and_then(|written| {
                written
                    .map_err(
                        |err| tracing::warn!(error = %err, "could not write the hash file; assets keep plain names"),
                    )
                    .ok()
            });
        Self {
            inner: Arc::new(Inner {
                hashed,
                hash_file,
                files: ServeDir::new(pkg_dir).precompressed_br().precompressed_gzip(),
            }),
        }
    }

    /// The file leptos reads the hashed names from (an absolute path), or `None` when
    /// the files keep their plain names.
    pub fn hash_file(&self) -> Option<&Path> {
        self.inner.hash_file.as_deref()
    }
}

/// The JavaScript, wasm and CSS files in `pkg_dir` (not their compressed copies).
fn site_files(pkg_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(pkg_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .and_then(|extension| extension.to_str())
                    .is_some_and(|extension| COMPRESSED.contains(&extension))
        })
        .collect()
}

/// Writes `lines` to a hash file named after its content in the temporary directory
/// (the site's own directory may be read-only), once.
fn write_hash_file(lines: &str) -> std::io::Result<PathBuf> {
    let name = hex::encode(&Sha256::digest(lines.as_bytes())[..8]);
    let path = std::env::temp_dir().join(format!("weft-assets-{name}.txt"));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(lines) {
        write_atomically(&path, lines.as_bytes())?;
    }
    Ok(path)
}

/// Makes `file.br` and `file.gz` beside `file`, unless they are newer than it already.
fn compress(file: &Path, content: &[u8]) -> std::io::Result<()> {
    let modified = std::fs::metadata(file)?.modified()?;
    let fresh = |copy: &Path| {
        std::fs::metadata(copy)
            .and_then(|meta| meta.modified())
            .is_ok_and(|made| made >= modified)
    };
    let br = with_suffix(file, "br");
    if !fresh(&br) {
        let mut out = Vec::new();
        {
            // The best brotli takes about a second a megabyte: worth it for a release
            // build's wasm, not for a debug build's dozen megabytes.
            let quality = if content.len() <= BEST_BROTLI_UP_TO { 11 } else { 5 };
            let mut writer = brotli::CompressorWriter::new(&mut out, 64 * 1024, quality, 22);
            writer.write_all(content)?;
        }
        write_atomically(&br, &out)?;
    }
    let gz = with_suffix(file, "gz");
    if !fresh(&gz) {
        let mut writer = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        writer.write_all(content)?;
        write_atomically(&gz, &writer.finish()?)?;
    }
    Ok(())
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `bytes` to `path` through a temporary file and a rename: a server starting
/// beside another never reads half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = with_suffix(path, &format!("{}.tmp", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

/// `GET /pkg/{file}`: a hashed name is served as its file, cached as immutable; a plain
/// name as it is, revalidated each time. Either way brotli or gzip when accepted.
pub async fn serve(State(assets): State<Assets>, mut request: Request) -> Response {
    let name = request.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
    let (file, cache) = match assets.inner.hashed.get(&name) {
        Some(file) => (file.clone(), IMMUTABLE),
        None => (name, REVALIDATE),
    };
    let Ok(uri) = format!("/{file}").parse::<Uri>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    *request.uri_mut() = uri;
    let response = match assets.inner.files.clone().oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    };
    let mut response = response.into_response();
    if response.status().is_success() {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_come_from_the_content_and_compressed_copies_are_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = b"\0asm".repeat(4_000);
        std::fs::write(dir.path().join("site.wasm"), &wasm).unwrap();
        std::fs::write(dir.path().join("site.js"), "export default 1;").unwrap();
        std::fs::write(dir.path().join("site.css"), "body { margin: 0 }").unwrap();
        // A chunk split off the wasm for an island keeps its name, compressed all the same.
        std::fs::write(dir.path().join("split_island.wasm"), b"chunk".repeat(100)).unwrap();
        let assets = Assets::prepare(dir.path(), "site");
        assert!(dir.path().join("split_island.wasm.br").is_file());
        assert!(dir.path().join("split_island.wasm.gz").is_file());
        assert!(!dir.path().join("site.wasm.gz.gz").exists());
        let hash = hex::encode(&Sha256::digest(&wasm)[..8]);
        assert_eq!(
            assets
                .inner
                .hashed
                .get(&format!("site.{hash}.wasm"))
                .map(String::as_str),
            Some("site.wasm")
        );
        let lines = std::fs::read_to_string(assets.hash_file().unwrap()).unwrap();
        assert!(lines.contains(&format!("wasm: {hash}\n")), "{lines}");
        let gz = std::fs::read(dir.path().join("site.wasm.gz")).unwrap();
        let mut unzipped = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut unzipped).unwrap();
        assert_eq!(unzipped, wasm);
        assert!(gz.len() < wasm.len() / 10);
        let br = std::fs::read(dir.path().join("site.wasm.br")).unwrap();
        let mut unbrotli = Vec::new();
        brotli::BrotliDecompress(&mut br.as_slice(), &mut unbrotli).unwrap();
        assert_eq!(unbrotli, wasm);
        // Up to date: left alone.
        let made = std::fs::metadata(dir.path().join("site.wasm.br"))
            .unwrap()
            .modified()
            .unwrap();
        Assets::prepare(dir.path(), "site");
        let again = std::fs::metadata(dir.path().join("site.wasm.br"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(made, again);
    }

    #[test]
    fn a_site_without_its_files_keeps_plain_names() {
        let dir = tempfile::tempdir().unwrap();
        let assets = Assets::prepare(dir.path(), "site");
        assert!(assets.hash_file().is_none());
        assert!(assets.inner.hashed.is_empty());
    }
}
