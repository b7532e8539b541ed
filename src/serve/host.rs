//! The Host checks of every request, parsed strictly: at most one Host
//! header; an absolute-form target (`GET http://HOST/...`) that agrees with it;
//! and, when the server listens on loopback, only loopback names in either, so
//! a page on another name that resolves to 127.0.0.1 (DNS rebinding) is
//! refused. A Host is `name[:port]` or `[IPv6][:port]` and nothing else: no
//! userinfo (`localhost:80@evil.com`), no text after `]` (`[::1].evil.com`).

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

use super::app::error;

/// The refusal a request's Host header and target earn, if any.
pub(crate) fn check(
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    loopback: bool,
) -> Option<Response> {
    const FOREIGN: &str = "this server answers only to localhost names (a guard against DNS \
         rebinding); open it as http://127.0.0.1:PORT/ or start it with --host";
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "more than one Host header; send exactly one",
        ));
    }
    let host = match host.map(|h| h.to_str()) {
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => {
            return Some(error(
                StatusCode::BAD_REQUEST,
                "the Host header is not ASCII",
            ))
        }
        None => None,
    };
    let target = uri.authority().map(|a| a.as_str());
    if let (Some(h), Some(t)) = (host, target) {
        if !h.eq_ignore_ascii_case(t) {
            return Some(error(
                StatusCode::BAD_REQUEST,
                "the request target names another host than the Host header",
            ));
        }
    }
    if loopback
        && [host, target]
            .into_iter()
            .flatten()
            .any(|h| !is_loopback_host(h))
    {
        return Some(error(StatusCode::FORBIDDEN, FOREIGN));
    }
    None
}

/// `host[:port]` split strictly as RFC 3986 writes an authority without
/// userinfo: a bracketed IPv6 address or dot-separated non-empty labels of
/// letters, digits and `-`, then an optional port of digits. `None` for
/// anything else (a userinfo `@`, text after `]`, a second `:`).
pub(crate) fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (inside, None),
            _ => (inside, Some(after.strip_prefix(':')?)),
        }
    } else {
        let (name, port) = match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        };
        let name_ok = name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !name_ok {
            return None;
        }
        (name, port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((name, port))
}

/// Whether `host` (a Host header or an absolute target's authority) is a
/// well-formed loopback name: `localhost`, `*.localhost`, or a loopback address.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let Some((name, _)) = split_host(host) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
