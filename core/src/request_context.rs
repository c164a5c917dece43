//! Facts about the HTTP request being answered that code deep below the handlers needs: the
//! client's address (the sign-in throttle's key, the audit log's `address`) and whether the
//! request came over HTTPS (`Secure` cookies, HSTS).
//!
//! The server's outermost middleware works them out once per request with [`resolve`] and runs
//! the rest of the request inside [`scope`]; anything on that task then reads them with
//! [`client_address`] and [`is_https`], without threading them through every signature.
//! Outside a request (commands, workers, background tasks) there is no context:
//! [`client_address`] is `None` and [`is_https`] is `false`.
//!
//! Forwarded headers are believed only from a trusted proxy (`tls.trusted_proxies`): anyone else
//! could write `X-Forwarded-For: <any address>` to escape the address throttle, or
//! `X-Forwarded-Proto: https` to fake a secure transport.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

/// What is known about the request being answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The client's address: the peer, or the client a trusted proxy forwarded for.
    pub address: Option<IpAddr>,
    /// The request came over TLS: ours, or a trusted proxy's (`X-Forwarded-Proto: https`).
    pub https: bool,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// Runs `f` with `ctx` as the request context of everything it awaits on this task.
pub async fn scope<F: Future>(ctx: RequestContext, f: F) -> F::Output {
    CONTEXT.scope(ctx, f).await
}

/// The context of the current request, if this task is answering one.
pub fn current() -> Option<RequestContext> {
    CONTEXT.try_with(|ctx| *ctx).ok()
}

/// The client's address for the current request (the peer, or the nearest untrusted
/// `X-Forwarded-For` hop when the peer is a trusted proxy); `None` outside a request.
pub fn client_address() -> Option<IpAddr> {
    current().and_then(|ctx| ctx.address)
}

/// Whether the current request came over TLS (served by us, or `X-Forwarded-Proto: https`
/// from a trusted proxy); `false` outside a request.
pub fn is_https() -> bool {
    current().is_some_and(|ctx| ctx.https)
}

/// Works out a request's context from the connection and its forwarded headers.
///
/// - `peer`: the TCP peer (`None` when the application is driven without a socket);
/// - `tls`: this server terminated TLS on the connection;
/// - `trusted`: the proxies whose forwarded headers are believed;
/// - `forwarded_for`: every `X-Forwarded-For` value in header order;
/// - `forwarded_proto`: the last `X-Forwarded-Proto` value, if any.
///
/// From a trusted peer the client is found by walking `X-Forwarded-For` from the right (the
/// hop the nearest proxy appended) past trusted proxies: the first address that is not one is
/// the client. Entries further left were written by whoever that client is and prove nothing,
/// so the left-most entry is used only when every hop is a trusted proxy. An entry that is not
/// an address stops the walk at the last trusted hop.
pub fn resolve<'a>(
    peer: Option<IpAddr>,
    tls: bool,
    trusted: &[IpAddr],
    forwarded_for: impl IntoIterator<Item = &'a str>,
    forwarded_proto: Option<&str>,
) -> RequestContext {
    let Some(peer) = peer.map(canonical) else {
        return RequestContext {
            address: None,
            https: tls,
        };
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|t| canonical(*t) == *ip);
    if !is_trusted(&peer) {
        return RequestContext {
            address: Some(peer),
            https: tls,
        };
    }
    let hops: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    // Proxies that append (rather than replace) the header leave the nearest one's value last.
    let forwarded_https = forwarded_proto
        .and_then(|value| value.rsplit(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    RequestContext {
        address: Some(client),
        https: tls || forwarded_https,
    }
}

/// An `X-Forwarded-For` hop: an address, possibly with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(socket) = hop.parse::<SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
        .map(canonical)
}

/// IPv4 clients of a dual-stack socket appear as `::ffff:a.b.c.d`; they are the IPv4 address,
/// for the throttle and for matching trusted proxies alike.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let ctx = resolve(
            Some(ip("203.0.113.9")),
            false,
            &[ip("10.0.0.1")],
            ["198.51.100.1"],
            Some("https"),
        );
        assert_eq!(ctx.address, Some(ip("203.0.113.9")));
        assert!(!ctx.https);
    }

    #[test]
    fn a_trusted_proxy_names_the_nearest_untrusted_hop() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        // The client forged the left-most entry; the proxies appended the rest.
        let ctx = resolve(
            Some(ip("10.0.0.1")),
            false,
            &trusted,
            ["6.6.6.6, 198.51.100.7", "10.0.0.2"],
            Some("https"),
        );
        assert_eq!(ctx.address, Some(ip("198.51.100.7")));
        assert!(ctx.https);
    }

    #[test]
    fn only_trusted_hops_leave_the_left_most() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        let ctx = resolve(Some(ip("10.0.0.1")), false, &trusted, ["10.0.0.2"], None);
        assert_eq!(ctx.address, Some(ip("10.0.0.2")));
        assert!(!ctx.https);
    }

    #[test]
    fn hops_with_ports_and_garbage() {
        let trusted = [ip("127.0.0.1")];
        let ctx = resolve(
            Some(ip("127.0.0.1")),
            false,
            &trusted,
            ["[2001:db8::5]:443"],
            None,
        );
        assert_eq!(ctx.address, Some(ip("2001:db8::5")));
        let ctx = resolve(
            Some(ip("127.0.0.1")),
            false,
            &trusted,
            ["192.0.2.1:8080"],
            None,
        );
        assert_eq!(ctx.address, Some(ip("192.0.2.1")));
        let ctx = resolve(Some(ip("127.0.0.1")), false, &trusted, ["unknown"], None);
        assert_eq!(
            ctx.address,
            Some(ip("127.0.0.1")),
            "the walk stops at the proxy"
        );
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_proxies() {
        let ctx = resolve(
            Some(ip("::ffff:127.0.0.1")),
            false,
            &[ip("127.0.0.1")],
            ["192.0.2.8"],
            Some("http, https"),
        );
        assert_eq!(ctx.address, Some(ip("192.0.2.8")));
        assert!(ctx.https, "the nearest proxy's value counts");
    }

    #[test]
    fn our_own_tls_is_https_without_headers() {
        let ctx = resolve(Some(ip("192.0.2.3")), true, &[], Vec::<&str>::new(), None);
        assert!(ctx.https);
        assert!(!resolve(None, false, &[], ["1.1.1.1"], Some("https")).https);
    }

    #[tokio::test]
    async fn the_scope_holds_the_context() {
        assert_eq!(client_address(), None);
        assert!(!is_https());
        let ctx = RequestContext {
            address: Some(ip("192.0.2.4")),
            https: true,
        };
        let seen = scope(ctx, async { (client_address(), is_https()) }).await;
        assert_eq!(seen, (Some(ip("192.0.2.4")), true));
        assert_eq!(current(), None);
    }
}
