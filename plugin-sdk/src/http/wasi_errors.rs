//! Readable errors for the error codes of `wasi:http`.
//!
//! The host refuses a request it does not grant with
//! `internal-error(some(reason))`; that reason is passed on unchanged, since
//! it is the one message the plugin's author needs. Every other code
//! becomes a sentence naming the destination.

use wasi::http::types::ErrorCode;

use crate::Error;

/// The error for `code`, met talking to `host_port`.
pub(crate) fn from_code(code: &ErrorCode, host_port: &str) -> Error {
    use ErrorCode as C;
    // Retryable: the network or the server may behave better next time.
    let retry = |message: String| Error::retryable(message);
    let fail = |message: String| Error::new(message);
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(host, _)| host);
    match code {
        C::InternalError(Some(message)) => fail(message.clone()),
        C::InternalError(None) => fail(format!(
            "http to {host_port}: internal error in the host's HTTP client"
        )),
        C::DnsTimeout => retry(format!("DNS lookup of {host} timed out")),
        C::DnsError(payload) => {
            let mut message = format!("DNS error looking up {host}");
            if let Some(rcode) = &payload.rcode {
                message.push_str(&format!(": {rcode}"));
            }
            if let Some(info) = payload.info_code {
                message.push_str(&format!(" (extended code {info})"));
            }
            retry(message)
        }
        C::DestinationNotFound => fail(format!("{host} not found (DNS)")),
        C::DestinationUnavailable => retry(format!("{host_port} is unavailable")),
        C::DestinationIpProhibited => fail(format!(
            "http to {host_port} is prohibited: the address it resolves to is not granted \
             (loopback, private and link-local addresses need a grant naming the IP or a \
             CIDR range, such as 10.0.0.0/8:443)"
        )),
        C::DestinationIpUnroutable => fail(format!("{host_port} is unroutable")),
        C::ConnectionRefused => retry(format!("connection refused to {host_port}")),
        C::ConnectionTerminated => retry(format!(
            "the connection to {host_port} was closed before the response"
        )),
        C::ConnectionTimeout => retry(format!("connecting to {host_port} timed out")),
        C::ConnectionReadTimeout => retry(format!("reading from {host_port} timed out")),
        C::ConnectionWriteTimeout => retry(format!("writing to {host_port} timed out")),
        C::ConnectionLimitReached => retry(format!(
            "connection limit reached connecting to {host_port}"
        )),
        C::TlsProtocolError => retry(format!("TLS protocol error talking to {host_port}")),
        C::TlsCertificateError => fail(format!(
            "TLS certificate error for {host_port}: the server's certificate is not trusted \
             or not valid for {host}"
        )),
        C::TlsAlertReceived(alert) => {
            let mut message = format!("TLS alert from {host_port}");
            match (&alert.alert_message, alert.alert_id) {
                (Some(text), Some(id)) => message.push_str(&format!(": {text} ({id})")),
                (Some(text), None) => message.push_str(&format!(": {text}")),
                (None, Some(id)) => message.push_str(&format!(": alert {id}")),
                (None, None) => {}
            }
            fail(message)
        }
        C::HttpRequestDenied => fail(format!("the request to {host_port} was denied")),
        C::HttpRequestLengthRequired => fail(format!("{host_port} requires a Content-Length")),
        C::HttpRequestBodySize(_) => fail(format!(
            "the request body does not match its Content-Length, or is too large for {host_port}"
        )),
        C::HttpRequestMethodInvalid => fail("invalid HTTP method".to_owned()),
        C::HttpRequestUriInvalid => fail("invalid URL".to_owned()),
        C::HttpRequestUriTooLong => fail(format!("the URL is too long for {host_port}")),
        C::HttpRequestHeaderSectionSize(_) | C::HttpRequestHeaderSize(_) => {
            fail(format!("the request headers are too large for {host_port}"))
        }
        C::HttpRequestTrailerSectionSize(_) | C::HttpRequestTrailerSize(_) => fail(format!(
            "the request trailers are too large for {host_port}"
        )),
        C::HttpResponseIncomplete => retry(format!("the response from {host_port} was incomplete")),
        C::HttpResponseHeaderSectionSize(_) | C::HttpResponseHeaderSize(_) => fail(format!(
            "the response headers from {host_port} are too large"
        )),
        C::HttpResponseBodySize(_) => {
            fail(format!("the response body from {host_port} is too large"))
        }
        C::HttpResponseTrailerSectionSize(_) | C::HttpResponseTrailerSize(_) => fail(format!(
            "the response trailers from {host_port} are too large"
        )),
        C::HttpResponseTransferCoding(coding) => fail(format!(
            "{host_port} answered with an unsupported transfer coding{}",
            quoted(coding)
        )),
        C::HttpResponseContentCoding(coding) => fail(format!(
            "{host_port} answered with an unsupported content coding{}",
            quoted(coding)
        )),
        C::HttpResponseTimeout => retry(format!("{host_port} did not answer in time")),
        C::HttpUpgradeFailed => fail(format!("HTTP upgrade with {host_port} failed")),
        C::HttpProtocolError => retry(format!("HTTP protocol error talking to {host_port}")),
        C::LoopDetected => fail(format!("loop detected sending to {host_port}")),
        C::ConfigurationError => fail(format!(
            "http to {host_port}: the host's HTTP client is misconfigured"
        )),
    }
}

fn quoted(value: &Option<String>) -> String {
    value
        .as_deref()
        .map(|v| format!(" {v:?}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasi::http::types::{DnsErrorPayload, TlsAlertReceivedPayload};

    #[test]
    fn the_hosts_refusal_passes_unchanged() {
        let reason =
            "http to example.com:443 is not granted to this action (grants: api.internal:443)";
        let err = from_code(
            &ErrorCode::InternalError(Some(reason.to_owned())),
            "example.com:443",
        );
        assert_eq!(err.message(), reason);
        assert!(!err.is_retryable());
    }

    #[test]
    fn codes_read_as_sentences_and_transport_failures_are_retryable() {
        let cases = [
            (
                ErrorCode::ConnectionRefused,
                "connection refused to example.com:8443",
                true,
            ),
            (
                ErrorCode::DnsTimeout,
                "DNS lookup of example.com timed out",
                true,
            ),
            (
                ErrorCode::DnsError(DnsErrorPayload {
                    rcode: Some("NXDOMAIN".into()),
                    info_code: None,
                }),
                "DNS error looking up example.com: NXDOMAIN",
                true,
            ),
            (
                ErrorCode::ConnectionTimeout,
                "connecting to example.com:8443 timed out",
                true,
            ),
            (
                ErrorCode::TlsCertificateError,
                "TLS certificate error for example.com:8443: the server's certificate is not trusted or not valid for example.com",
                false,
            ),
            (
                ErrorCode::TlsAlertReceived(TlsAlertReceivedPayload {
                    alert_id: Some(40),
                    alert_message: Some("handshake failure".into()),
                }),
                "TLS alert from example.com:8443: handshake failure (40)",
                false,
            ),
            (
                ErrorCode::HttpResponseTimeout,
                "example.com:8443 did not answer in time",
                true,
            ),
        ];
        for (code, message, retryable) in cases {
            let err = from_code(&code, "example.com:8443");
            assert_eq!(
                (err.message(), err.is_retryable()),
                (message, retryable),
                "{code:?}"
            );
        }
        let err = from_code(&ErrorCode::DestinationIpProhibited, "[::1]:80");
        assert!(
            err.message()
                .starts_with("http to [::1]:80 is prohibited: "),
            "{err}"
        );
        assert!(!err.is_retryable());
        let err = from_code(&ErrorCode::DnsTimeout, "[::1]:80");
        assert_eq!(err.message(), "DNS lookup of [::1] timed out");
    }
}
