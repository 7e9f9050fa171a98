//! Setting topic configs: IncrementalAlterConfigs (Kafka API key 44,
//! version 0), one request over one plain TCP connection to a bootstrap
//! broker.
//!
//! Why not the client library: librdkafka has the call but rdkafka 0.39
//! does not wrap it, and the legacy AlterConfigs it does wrap replaces a
//! topic's whole dynamic config (every config not sent reverts to its
//! default) and is not served by every broker (nisshi has only the
//! incremental one). The incremental call sets the named configs and
//! touches nothing else; brokers since Kafka 2.3, Redpanda and nisshi serve
//! it. It speaks plaintext only: on a cluster the deployment's properties
//! secure (`security.protocol` other than `plaintext`,
//! [`super::client`]) it does not connect, and `topics create` names the
//! configs to set by hand.
//!
//! The encoding and decoding are pure ([`request`], [`response`]);
//! [`set_topic_configs`] is the I/O around them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const API_KEY: i16 = 44;
const API_VERSION: i16 = 0;
const RESOURCE_TOPIC: i8 = 2;
const OP_SET: i8 = 0;
const CLIENT_ID: &str = "geoclock-admin";

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The framed request setting `configs` on `topic`.
pub fn request(correlation: i32, topic: &str, configs: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&API_KEY.to_be_bytes());
    body.extend_from_slice(&API_VERSION.to_be_bytes());
    body.extend_from_slice(&correlation.to_be_bytes());
    put_str(&mut body, CLIENT_ID);
    body.extend_from_slice(&1i32.to_be_bytes()); // one resource
    body.push(RESOURCE_TOPIC as u8);
    put_str(&mut body, topic);
    body.extend_from_slice(&(configs.len() as i32).to_be_bytes());
    for (k, v) in configs {
        put_str(&mut body, k);
        body.push(OP_SET as u8);
        put_str(&mut body, v);
    }
    body.push(0); // validate_only: false
    let mut framed = (body.len() as i32).to_be_bytes().to_vec();
    framed.extend(body);
    framed
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("response truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().map_err(|_| "short")?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().map_err(|_| "short")?))
    }

    fn string(&mut self) -> Result<Option<String>, String> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(self.take(n as usize)?).into_owned()))
    }
}

/// One resource's answer: its name, the error code (0: done) and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub resource: String,
    pub error_code: i16,
    pub message: Option<String>,
}

/// Decodes a response (without its 4-byte size) to request `correlation`.
pub fn response(correlation: i32, bytes: &[u8]) -> Result<Vec<Answer>, String> {
    let mut r = Reader(bytes);
    let got = r.i32()?;
    if got != correlation {
        return Err(format!("answer to request {got}, not {correlation}"));
    }
    let _throttle_ms = r.i32()?;
    let n = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        let error_code = r.i16()?;
        let message = r.string()?;
        let _resource_type = r.take(1)?;
        let resource = r.string()?.unwrap_or_default();
        out.push(Answer { resource, error_code, message });
    }
    Ok(out)
}

/// Sets `configs` on `topic` through the first broker of `bootstrap`
/// (`host:port[,host:port...]`) that answers.
pub fn set_topic_configs(
    bootstrap: &str,
    topic: &str,
    configs: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), String> {
    if let Some(why) = secured(super::client::base(bootstrap).get("security.protocol")) {
        return Err(why);
    }
    let mut last = String::from("no broker given");
    for addr in bootstrap.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match exchange(addr, topic, configs, timeout) {
            Ok(answers) => {
                return match answers.iter().find(|a| a.resource == topic) {
                    Some(a) if a.error_code == 0 => Ok(()),
                    Some(a) => Err(format!(
                        "IncrementalAlterConfigs error {}{}",
                        a.error_code,
                        a.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                    )),
                    None => Err("IncrementalAlterConfigs: no answer for the topic".into()),
                };
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// Why a cluster with this `security.protocol` is not reached over a plain
/// connection; `None` for plaintext (or unset).
fn secured(protocol: Option<&str>) -> Option<String> {
    protocol
        .filter(|p| !p.eq_ignore_ascii_case("plaintext"))
        .map(|p| format!("security.protocol is {p}: geoclock changes topic configs over plaintext only"))
}

fn exchange(addr: &str, topic: &str, configs: &[(&str, &str)], timeout: Duration) -> Result<Vec<Answer>, String> {
    use std::net::ToSocketAddrs;
    let sock = addr.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("unresolved")?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let correlation = 1;
    s.write_all(&request(correlation, topic, configs)).map_err(|e| e.to_string())?;
    let mut size = [0u8; 4];
    s.read_exact(&mut size).map_err(|e| e.to_string())?;
    let size = i32::from_be_bytes(size);
    if !(0..=1 << 20).contains(&size) {
        return Err(format!("implausible response size {size}"));
    }
    let mut body = vec![0u8; size as usize];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    response(correlation, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_framed_as_the_protocol_says() {
        let r = request(7, "t", &[("retention.ms", "5")]);
        let mut want = Vec::new();
        let body: Vec<u8> = [
            &44i16.to_be_bytes()[..],
            &0i16.to_be_bytes(),
            &7i32.to_be_bytes(),
            &14i16.to_be_bytes(),
            b"geoclock-admin",
            &1i32.to_be_bytes(),
            &[2],
            &1i16.to_be_bytes(),
            b"t",
            &1i32.to_be_bytes(),
            &12i16.to_be_bytes(),
            b"retention.ms",
            &[0],
            &1i16.to_be_bytes(),
            b"5",
            &[0],
        ]
        .concat();
        want.extend_from_slice(&(body.len() as i32).to_be_bytes());
        want.extend(body);
        assert_eq!(r, want);
    }

    #[test]
    fn only_a_plaintext_cluster_is_reached() {
        assert_eq!(secured(None), None);
        assert_eq!(secured(Some("PLAINTEXT")), None);
        assert!(secured(Some("SASL_SSL")).is_some_and(|w| w.contains("SASL_SSL")));
    }

    #[test]
    fn responses_decode_and_bad_ones_are_errors() {
        let mut b = Vec::new();
        b.extend_from_slice(&7i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&40i16.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(b"bad");
        b.push(2);
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(b"t");
        assert_eq!(
            response(7, &b).unwrap(),
            vec![Answer { resource: "t".into(), error_code: 40, message: Some("bad".into()) }]
        );
        assert!(response(8, &b).is_err(), "another request's answer");
        assert!(response(7, &b[..b.len() - 1]).is_err(), "truncated");
    }
}
