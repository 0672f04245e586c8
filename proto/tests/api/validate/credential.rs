//! Consumer and Secret rules: key hashes are SHA-256 in hex, and no credential identifies two
//! consumers.

use super::{cases, refused_cases};
use crate::fixtures::{pems, tls_secret};

#[test]
fn consumer_rules() {
    let sha = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
    refused_cases(&[
        (
            &format!(
                "kind: Consumer\nname: carol\nspec: {{api_keys: [{{id: a, sha256: {}}}, {{id: a, sha256: abc}}]}}\n",
                sha.to_uppercase()
            ),
            &[
                "Consumer/carol: api_keys[0].sha256: must be the SHA-256 of the key as 64 lowercase hex digits",
                "api_keys[1].sha256: must be the SHA-256",
                "api_keys[1].id: key id \"a\" is used twice",
            ],
        ),
        (
            &format!(
                "kind: Consumer\nname: carol\nspec: {{api_keys: [{{sha256: {sha}}}], jwt_subjects: ['bob@example.com', '']}}\n"
            ),
            &[
                "Consumer/carol: jwt_subjects[1]: subject must not be empty",
                "Consumer/carol: api_keys[0].sha256: the same key belongs to Consumer/alice",
                "Consumer/carol: jwt_subjects[0]: subject \"bob@example.com\" also belongs to Consumer/bob",
            ],
        ),
    ]);
}

#[test]
fn secret_rules() {
    let p = pems();
    let chain = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    cases(&[
        (
            "kind: Secret\nname: token\nspec: {}\n",
            &["Secret/token: a secret value (tls or opaque) is required"],
        ),
        (
            &tls_secret("web-cert", &p.web_chain, &p.other_key),
            &[
                "Secret/web-cert: tls.private_key: private key does not match the first certificate of the chain",
            ],
        ),
        (
            &tls_secret("web-cert", &p.client_chain, &p.web_key),
            &["tls.private_key: private key does not match"],
        ),
        (&tls_secret("web-cert", &p.client_chain, &p.client_key), &[]),
        (
            &tls_secret("web-cert", &p.web_chain, "garbage"),
            &["tls.private_key: invalid PEM private key"],
        ),
        (
            &tls_secret("web-cert", "garbage", &p.web_key),
            &["Secret/web-cert: tls.certificate_chain: no PEM certificate found"],
        ),
        (
            &tls_secret("web-cert", &p.web_key, &p.web_key),
            &["tls.certificate_chain: no PEM certificate found"],
        ),
        (
            &tls_secret("web-cert", chain, &p.web_key),
            &["tls.certificate_chain: certificate 0 does not parse"],
        ),
        (
            &tls_secret(
                "spare",
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "",
            ),
            &["Secret/spare: tls.certificate_chain: invalid PEM"],
        ),
    ]);
}
