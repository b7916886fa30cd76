//! Static files built into the binary (the docs viewer, the dashboard's script, styles and
//! chart library): served with their content type and a year-long cache, under URLs that
//! carry a hash of the files, so a new build never meets a stale cached copy.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;

/// One file: its name under the route, its content type, its bytes.
pub type Asset = (&'static str, &'static str, &'static [u8]);

pub struct Assets {
    files: &'static [Asset],
    version: OnceLock<String>,
}

impl Assets {
    pub const fn new(files: &'static [Asset]) -> Self {
        Self { files, version: OnceLock::new() }
    }

    #[cfg(test)]
    pub fn files(&self) -> &'static [Asset] {
        self.files
    }

    /// A short hash of every file, for the `?v=` of their URLs.
    pub fn version(&self) -> &str {
        self.version.get_or_init(|| {
            use sha2::Digest as _;
            let mut hasher = sha2::Sha256::new();
            for (_, _, bytes) in self.files {
                hasher.update(bytes);
            }
            hex::encode(&hasher.finalize()[..6])
        })
    }

    /// The file named `file`, or a 404 problem.
    pub fn serve(&self, file: &str) -> Response {
        let Some((_, content_type, bytes)) = self.files.iter().find(|(name, _, _)| *name == file) else {
            return crate::problem::Problem::http(StatusCode::NOT_FOUND, "no such asset").into_response();
        };
        let headers = [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
        ];
        (headers, *bytes).into_response()
    }
}
