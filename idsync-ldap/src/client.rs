//! The protocol layer: connecting (ldap://, ldaps://, StartTLS with a configurable CA),
//! binding, paged searches, entry decoding, and the raw controls this crate decodes itself.
//! No mapping logic lives here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ldap3::asn1::{PL, StructureTag};
use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope};

use crate::ber;
use crate::config::LdapConfig;
use crate::error::{LdapError, check};

/// OID of the paged results control (RFC 2696).
pub(crate) const PAGED_OID: &str = "1.2.840.113556.1.4.319";

/// One decoded search result entry. Attribute names are kept as the server sent them;
/// [`RawEntry::get`] looks them up case-insensitively.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawEntry {
    pub(crate) dn: String,
    pub(crate) attrs: Vec<(String, Vec<Vec<u8>>)>,
    /// Response controls attached to the entry (content sync state).
    pub(crate) controls: Vec<RawControl>,
}

impl RawEntry {
    /// All values of `attr`.
    pub(crate) fn values(&self, attr: &str) -> &[Vec<u8>] {
        self.attrs
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(attr))
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    /// The first value of `attr` as UTF-8 text.
    pub(crate) fn get(&self, attr: &str) -> Option<String> {
        self.values(attr)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The first value of `attr`, raw.
    pub(crate) fn get_bytes(&self, attr: &str) -> Option<&[u8]> {
        self.values(attr).first().map(|v| v.as_slice())
    }
}

/// What a search produced besides entries.
#[derive(Debug, Default)]
pub(crate) struct SearchOutcome {
    pub(crate) entries: Vec<RawEntry>,
    /// Intermediate responses (content sync info), as raw BER of the response value.
    pub(crate) intermediates: Vec<Vec<u8>>,
    pub(crate) result: Option<ldap3::LdapResult>,
}

/// Builds the rustls configuration: the CA file's certificates as the only roots, or the
/// system's roots when no file is set (ldap3's default). Verification is never turned off.
fn tls_config(cfg: &LdapConfig) -> Result<Option<Arc<rustls::ClientConfig>>, LdapError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let Some(path) = &cfg.tls_ca_file else {
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| LdapError::Tls(format!("reading {}: {e}", path.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| LdapError::Tls(format!("{}: {e}", path.display())))?;
        roots
            .add(cert)
            .map_err(|e| LdapError::Tls(format!("{}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(LdapError::Tls(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

/// Opens a connection, drives it on the runtime, and binds.
pub(crate) async fn connect(cfg: &LdapConfig) -> Result<Ldap, LdapError> {
    let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(timeout)
        .set_starttls(cfg.starttls);
    if let Some(tls) = tls_config(cfg)? {
        settings = settings.set_config(tls);
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &cfg.url).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!(error = %e, "ldap connection closed");
        }
    });
    ldap.timeout = Some(timeout);
    if let Some(dn) = &cfg.bind_dn {
        let res = ldap.simple_bind(dn, cfg.password()).await?;
        check(res)?;
    }
    Ok(ldap)
}

/// Encodes a paged results request control value.
pub(crate) fn paged_control(size: u32, cookie: &[u8]) -> RawControl {
    let mut inner = Vec::new();
    ber::write(&mut inner, 0x02, &ber::int_content(i64::from(size)));
    ber::write(&mut inner, 0x04, cookie);
    let mut val = Vec::new();
    ber::write(&mut val, 0x30, &inner);
    RawControl {
        ctype: PAGED_OID.to_owned(),
        crit: false,
        val: Some(val),
    }
}

/// Decodes a paged results response control value; returns the cookie.
pub(crate) fn parse_paged_response(val: &[u8]) -> Option<Vec<u8>> {
    let seq = ber::read_all(val)?;
    let kids = seq.children()?;
    match kids.as_slice() {
        [size, cookie]
            if size.is_universal(ber::INTEGER) && cookie.is_universal(ber::OCTET_STRING) =>
        {
            Some(cookie.content.to_vec())
        }
        _ => None,
    }
}

/// Runs one search with the given request controls and collects everything.
///
/// The caller checks `result`: the result code is not judged here.
pub(crate) async fn search_raw(
    ldap: &mut Ldap,
    base: &str,
    scope: Scope,
    filter: &str,
    attrs: &[&str],
    controls: Vec<RawControl>,
) -> Result<SearchOutcome, LdapError> {
    let attrs: Vec<String> = attrs.iter().map(|s| (*s).to_owned()).collect();
    let mut stream = ldap
        .with_controls(controls)
        .streaming_search(base, scope, filter, attrs)
        .await?;
    let mut out = SearchOutcome::default();
    loop {
        match stream.next().await {
            Ok(Some(re)) => {
                if re.is_ref() {
                    continue; // AD's continuation references: never chased
                }
                if re.is_intermediate() {
                    if let Some(v) = intermediate_value(&re.0) {
                        out.intermediates.push(v);
                    }
                    continue;
                }
                let mut entry = decode_entry(re.0)
                    .ok_or_else(|| LdapError::Malformed("search result entry".into()))?;
                entry.controls = re.1.into_iter().map(|c| c.1).collect();
                out.entries.push(entry);
            }
            Ok(None) => break,
            Err(e) => {
                let _ = stream.finish().await;
                return Err(e.into());
            }
        }
    }
    out.result = Some(stream.finish().await);
    Ok(out)
}

/// Finds a response control by OID.
pub(crate) fn find_control<'a>(res: &'a ldap3::LdapResult, oid: &str) -> Option<&'a RawControl> {
    res.ctrls.iter().map(|c| &c.1).find(|c| c.ctype == oid)
}

/// One page of a paged search. Returns the entries and the next cookie (`None` when done).
///
/// A size or admin limit, or any other non-success code, is an error: a listing is never
/// silently short.
pub(crate) async fn paged_page(
    ldap: &mut Ldap,
    base: &str,
    scope: Scope,
    filter: &str,
    attrs: &[&str],
    size: u32,
    cookie: &[u8],
) -> Result<(Vec<RawEntry>, Option<Vec<u8>>), LdapError> {
    let out = search_raw(
        ldap,
        base,
        scope,
        filter,
        attrs,
        vec![paged_control(size, cookie)],
    )
    .await?;
    let res = out
        .result
        .ok_or_else(|| LdapError::Malformed("search without a result".into()))?;
    let res = check(res)?;
    let next = match find_control(&res, PAGED_OID) {
        Some(ctrl) => {
            let val = ctrl
                .val
                .as_deref()
                .ok_or_else(|| LdapError::Malformed("empty paged results control".into()))?;
            let cookie = parse_paged_response(val)
                .ok_or_else(|| LdapError::Malformed("paged results control".into()))?;
            (!cookie.is_empty()).then_some(cookie)
        }
        // a server that ignored the (non-critical) control sent everything at once
        None => None,
    };
    Ok((out.entries, next))
}

/// Reads every entry matching `filter`, page by page (used for small lookups and tests).
pub(crate) async fn paged_all(
    ldap: &mut Ldap,
    base: &str,
    scope: Scope,
    filter: &str,
    attrs: &[&str],
    size: u32,
) -> Result<Vec<RawEntry>, LdapError> {
    let mut all = Vec::new();
    let mut cookie = Vec::new();
    loop {
        let (mut entries, next) =
            paged_page(ldap, base, scope, filter, attrs, size, &cookie).await?;
        all.append(&mut entries);
        match next {
            Some(c) => cookie = c,
            None => return Ok(all),
        }
    }
}

/// Reads one entry by DN; `None` when it does not exist.
pub(crate) async fn read_entry(
    ldap: &mut Ldap,
    dn: &str,
    attrs: &[&str],
) -> Result<Option<RawEntry>, LdapError> {
    let out = search_raw(ldap, dn, Scope::Base, "(objectClass=*)", attrs, vec![]).await?;
    let res = out
        .result
        .ok_or_else(|| LdapError::Malformed("search without a result".into()))?;
    if res.rc == 32 {
        return Ok(None);
    }
    check(res)?;
    Ok(out.entries.into_iter().next())
}

fn primitive(t: &StructureTag) -> Option<&[u8]> {
    match &t.payload {
        PL::P(v) => Some(v.as_slice()),
        PL::C(_) => None,
    }
}

fn constructed(t: &StructureTag) -> Option<&[StructureTag]> {
    match &t.payload {
        PL::C(v) => Some(v.as_slice()),
        PL::P(_) => None,
    }
}

fn into_primitive(t: StructureTag) -> Option<Vec<u8>> {
    match t.payload {
        PL::P(v) => Some(v),
        PL::C(_) => None,
    }
}

fn into_constructed(t: StructureTag) -> Option<Vec<StructureTag>> {
    match t.payload {
        PL::C(v) => Some(v),
        PL::P(_) => None,
    }
}

/// Decodes a SearchResultEntry ([APPLICATION 4]) without panicking on bad input. The tag is
/// taken apart, not copied: values move into the entry.
pub(crate) fn decode_entry(tag: StructureTag) -> Option<RawEntry> {
    if tag.id != 4 {
        return None;
    }
    let mut parts = into_constructed(tag)?.into_iter();
    let dn = String::from_utf8(into_primitive(parts.next()?)?).ok()?;
    let pas = into_constructed(parts.next()?)?;
    let mut attrs = Vec::with_capacity(pas.len());
    for pa in pas {
        let mut pa = into_constructed(pa)?.into_iter();
        let name = String::from_utf8(into_primitive(pa.next()?)?).ok()?;
        let vals = into_constructed(pa.next()?)?
            .into_iter()
            .map(into_primitive)
            .collect::<Option<Vec<_>>>()?;
        attrs.push((name, vals));
    }
    Some(RawEntry {
        dn,
        attrs,
        controls: Vec::new(),
    })
}

/// The responseValue ([1]) of an IntermediateResponse ([APPLICATION 25]).
fn intermediate_value(tag: &StructureTag) -> Option<Vec<u8>> {
    constructed(tag)?
        .iter()
        .find(|t| t.id == 1)
        .and_then(|t| primitive(t).map(<[u8]>::to_vec))
}

/// Groups attribute values by lowercase name (for tests and diagnostics).
#[allow(dead_code)]
pub(crate) fn attr_map(e: &RawEntry) -> HashMap<String, Vec<String>> {
    e.attrs
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paged_control_round_trip() {
        let c = paged_control(500, b"abc");
        assert_eq!(c.ctype, PAGED_OID);
        let v = c.val.unwrap();
        assert_eq!(parse_paged_response(&v).unwrap(), b"abc".to_vec());
        assert!(parse_paged_response(&[0x30, 0x02, 0x02, 0x00]).is_none());
        assert!(parse_paged_response(b"garbage").is_none());
    }

    #[test]
    fn decodes_entries_and_rejects_bad_shapes() {
        let entry = StructureTag {
            class: ldap3::asn1::TagClass::Application,
            id: 4,
            payload: PL::C(vec![
                StructureTag {
                    class: ldap3::asn1::TagClass::Universal,
                    id: 4,
                    payload: PL::P(b"uid=a,dc=x".to_vec()),
                },
                StructureTag {
                    class: ldap3::asn1::TagClass::Universal,
                    id: 16,
                    payload: PL::C(vec![StructureTag {
                        class: ldap3::asn1::TagClass::Universal,
                        id: 16,
                        payload: PL::C(vec![
                            StructureTag {
                                class: ldap3::asn1::TagClass::Universal,
                                id: 4,
                                payload: PL::P(b"mail".to_vec()),
                            },
                            StructureTag {
                                class: ldap3::asn1::TagClass::Universal,
                                id: 17,
                                payload: PL::C(vec![StructureTag {
                                    class: ldap3::asn1::TagClass::Universal,
                                    id: 4,
                                    payload: PL::P(b"a@x".to_vec()),
                                }]),
                            },
                        ]),
                    }]),
                },
            ]),
        };
        let e = decode_entry(entry).unwrap();
        assert_eq!(e.dn, "uid=a,dc=x");
        assert_eq!(e.get("MAIL").as_deref(), Some("a@x"));
        assert_eq!(attr_map(&e)["mail"], vec!["a@x".to_string()]);
        let bad = StructureTag {
            class: ldap3::asn1::TagClass::Application,
            id: 4,
            payload: PL::P(vec![1, 2]),
        };
        assert!(decode_entry(bad).is_none());
    }
}
