//! A private PKI for HTTPS tests, made by the `openssl` CLI at test time: an EC P-256 CA and a
//! leaf certificate it signed for `IP:127.0.0.1` only, and client certificates (signed by the CA,
//! or self-signed). Used by `tls.rs` (the token endpoint the daemon logs in to), `oauth2_mtls.rs`
//! (oidc-provider behind HTTPS) and `credential.rs` (the API server kubectl calls).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The EC P-256 CA and the leaf it signed for `IP:127.0.0.1` only, as files in one directory.
pub struct Pki {
    pub ca_pem: PathBuf,
    /// The same CA in DER: the likeliest wrong file to be given as `ca_file`.
    pub ca_der: PathBuf,
    pub leaf_pem: PathBuf,
    pub leaf_key: PathBuf,
}

/// Extension sections for `openssl`. The leaf must be a separate certificate signed by the CA:
/// rustls (webpki) refuses a CA certificate presented as a server's own, so a single self-signed
/// certificate would fail even with `ca_file` and prove nothing.
const OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

impl Pki {
    /// Makes a new CA and leaf in `dir` (created if missing) with the `openssl` CLI.
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("create the pki directory");
        // An explicit config keeps the result independent of the system's openssl.cnf.
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CONFIG).expect("write openssl.cnf");
        let p256 = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        openssl(
            dir,
            &format!(
                "req -x509 -config openssl.cnf -extensions ca {p256} -keyout ca.key -out ca.pem \
                 -days 2 -subj /CN=tokenkeeper-test-CA"
            ),
        );
        openssl(
            dir,
            &format!(
                "req -new -config openssl.cnf {p256} -keyout leaf.key -out leaf.csr \
                 -subj /CN=127.0.0.1"
            ),
        );
        openssl(
            dir,
            "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 \
             -extfile openssl.cnf -extensions leaf -out leaf.pem",
        );
        openssl(dir, "x509 -in ca.pem -outform DER -out ca.der");
        Pki {
            ca_pem: dir.join("ca.pem"),
            ca_der: dir.join("ca.der"),
            leaf_pem: dir.join("leaf.pem"),
            leaf_key: dir.join("leaf.key"),
        }
    }
}

/// The extension section of a TLS client certificate, for `openssl`
/// (`OPENSSL_CONFIG` above makes the CA and server certificates only).
const CLIENT_OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = dn
[dn]
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[self_signed]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
";

/// A client certificate and its key (EC P-256, PKCS#8 PEM), as files.
pub struct ClientCert {
    pub pem: PathBuf,
    pub key: PathBuf,
}

/// Makes a client certificate for `/CN=<cn>` signed by the CA that `Pki::generate(pki_dir)` made,
/// as `<name>.pem` and `<name>.key` in `pki_dir`; `serial` must differ between certificates of
/// one CA.
pub fn client_cert(pki_dir: &Path, name: &str, cn: &str, serial: u32) -> ClientCert {
    std::fs::write(pki_dir.join("client.cnf"), CLIENT_OPENSSL_CONFIG).expect("write client.cnf");
    let p256 = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    openssl(
        pki_dir,
        &format!(
            "req -new -config client.cnf {p256} -keyout {name}.key -out {name}.csr -subj /CN={cn}"
        ),
    );
    openssl(
        pki_dir,
        &format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -set_serial {serial} -days 2 \
             -extfile client.cnf -extensions client -out {name}.pem"
        ),
    );
    ClientCert {
        pem: pki_dir.join(format!("{name}.pem")),
        key: pki_dir.join(format!("{name}.key")),
    }
}

/// Makes a self-signed client certificate for `/CN=<cn>` (EC P-256), as `<name>.pem` and
/// `<name>.key` in `dir`: what RFC 8705 `self_signed_tls_client_auth` registers by its
/// thumbprint instead of chaining it to a CA.
pub fn self_signed_client_cert(dir: &Path, name: &str, cn: &str) -> ClientCert {
    std::fs::create_dir_all(dir).expect("create the pki directory");
    std::fs::write(dir.join("client.cnf"), CLIENT_OPENSSL_CONFIG).expect("write client.cnf");
    openssl(
        dir,
        &format!(
            "req -x509 -config client.cnf -extensions self_signed -newkey ec -pkeyopt \
             ec_paramgen_curve:P-256 -nodes -keyout {name}.key -out {name}.pem -days 2 \
             -subj /CN={cn}"
        ),
    );
    ClientCert {
        pem: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    }
}
/// Runs `openssl` in `dir` with the whitespace-separated `args`; panics with its stderr if it fails.
pub fn openssl(dir: &Path, args: &str) {
    let output = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
