//! An HTTP(S) server or CDN as a source, through reqwest. Every HTTP mirror of an origin
//! shares one client, so connections are pooled and kept alive across requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use reqwest::StatusCode;

use super::{Answer, Body, Opening, Refusal, Source, invalid_spec};
use crate::error::error_chain;
use crate::{Error, Result};

/// How long an idle connection stays open for the next request.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// TCP keepalive probes on idle connections, so a dead peer or NAT entry is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// A server: `base` ends with `/`, and a path is appended to it.
#[derive(Debug)]
pub(crate) struct HttpSource {
    client: reqwest::Client,
    base: String,
}

/// An `http://` or `https://` spec (`None` for any other).
pub(super) fn open(spec: &str, opening: &mut Opening<'_>) -> Option<Result<Arc<dyn Source>>> {
    if !(spec.starts_with("http://") || spec.starts_with("https://")) {
        return None;
    }
    Some(open_http(spec, opening))
}

fn open_http(spec: &str, opening: &mut Opening<'_>) -> Result<Arc<dyn Source>> {
    let url = reqwest::Url::parse(spec).map_err(|e| invalid_spec(spec, &e.to_string()))?;
    let mut base = url.to_string();
    if !base.ends_with('/') {
        base.push('/');
    }
    let client = match &opening.http_client {
        Some(client) => client.clone(),
        None => {
            let built = http_client(
                &opening.config.ca_certs,
                opening.fetch.max_parallel_requests,
            )
            .map_err(|e| invalid_spec(spec, &error_chain(&e)))?;
            opening.http_client = Some(built.clone());
            built
        }
    };
    Ok(Arc::new(HttpSource { client, base }))
}

/// The HTTP client every mirror shares. Connections are reused: up to one idle connection
/// per request in flight is kept per host (HTTP/1.1), or one connection carries them all
/// (HTTP/2, negotiated by ALPN over TLS).
fn http_client(
    ca_certs: &[reqwest::Certificate],
    max_parallel_requests: usize,
) -> std::result::Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(30))
        .user_agent(concat!("relsync/", env!("CARGO_PKG_VERSION")))
        // A redirect's body and second request would go uncounted; origins are static.
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(max_parallel_requests.max(1))
        .tcp_keepalive(TCP_KEEPALIVE)
        .http2_adaptive_window(true);
    for cert in ca_certs {
        builder = builder.add_root_certificate(cert.clone());
    }
    builder.build()
}

impl Source for HttpSource {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn always_honours_ranges(&self) -> bool {
        false
    }

    fn get<'a>(&'a self, path: &'a str, _limit: u64) -> BoxFuture<'a, Result<Answer>> {
        let url = self.url(path);
        Box::pin(send(self.client.get(&url), url))
    }

    fn get_range<'a>(
        &'a self,
        path: &'a str,
        start: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Answer>> {
        let url = self.url(path);
        let end = start + len - 1;
        let request = self
            .client
            .get(&url)
            .header(reqwest::header::RANGE, format!("bytes={start}-{end}"));
        Box::pin(send(request, url))
    }
}

/// Sends `request` and sorts the answer by its status.
async fn send(request: reqwest::RequestBuilder, url: String) -> Result<Answer> {
    let response = request.send().await.map_err(|e| transport(&url, e))?;
    let status = response.status();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_range, retry_after) = (
        header(reqwest::header::CONTENT_RANGE),
        header(reqwest::header::RETRY_AFTER),
    );
    let len = response.content_length();
    let body = Box::new(HttpBody { response, url });
    let answer = match status {
        StatusCode::OK => Answer::Whole { len, body },
        StatusCode::PARTIAL_CONTENT => Answer::Part {
            content_range: content_range.unwrap_or_default(),
            body,
        },
        _ => Answer::Refused(Refusal {
            status,
            retry_after,
            body,
        }),
    };
    Ok(answer)
}

/// A response's body.
#[derive(Debug)]
struct HttpBody {
    response: reqwest::Response,
    url: String,
}

impl Body for HttpBody {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Bytes>>> {
        Box::pin(async move {
            self.response
                .chunk()
                .await
                .map_err(|e| transport(&self.url, e))
        })
    }
}

/// A failure to send or receive, which a retry may cure: the error and its sources, as one
/// line.
fn transport(url: &str, e: reqwest::Error) -> Error {
    let chain = error_chain(&e);
    let reason = match certificate_problem(&chain) {
        Some(plain) => format!("{plain} ({chain})"),
        None => chain,
    };
    Error::Http {
        url: url.to_owned(),
        reason,
        transient: true,
    }
}

/// A refused server certificate in plain words, with the fix, from rustls's error text.
fn certificate_problem(chain: &str) -> Option<&'static str> {
    if chain.contains("UnknownIssuer") {
        Some(
            "the server's certificate was issued by a certificate authority this machine does \
             not trust (a private CA?): give that CA's certificate as PEM with --ca-cert FILE \
             (RELSYNC_CA_CERT; `ca_cert` in the daemon's config)",
        )
    } else if chain.contains("CaUsedAsEndEntity") {
        Some(
            "the server presents a CA certificate (self-signed, marked CA:TRUE?) as its own, \
             which TLS refuses even when it is trusted: give the server a certificate issued by \
             a CA, and that CA's certificate with --ca-cert FILE (RELSYNC_CA_CERT; `ca_cert` in \
             the daemon's config)",
        )
    } else if chain.contains("invalid peer certificate: Expired") {
        Some("the server's certificate has expired (or this machine's clock is wrong)")
    } else if chain.contains("NotValidForName") {
        Some("the server's certificate does not name this host (check the origin URL)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::certificate_problem;

    #[test]
    fn certificate_errors_in_plain_words() {
        let unknown = "error sending request: client error (Connect): invalid peer certificate: \
                       UnknownIssuer";
        let text = certificate_problem(unknown).unwrap_or_default();
        assert!(
            text.contains("not trust") && text.contains("--ca-cert"),
            "{text}"
        );
        let ca = "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))";
        let text = certificate_problem(ca).unwrap_or_default();
        assert!(
            text.contains("CA certificate") && text.contains("--ca-cert"),
            "{text}"
        );
        assert!(certificate_problem("invalid peer certificate: Expired").is_some());
        assert_eq!(certificate_problem("connection refused"), None);
    }
}
