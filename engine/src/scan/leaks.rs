//! Files whose presence is the leak: a private key file, a KeePass database, a cloud
//! SDK's credentials, a package manager's or `.netrc`'s password, a filled-in `.env`.
//! Known by their name and a cheap look at their content (a header, a magic number, one
//! assignment with a value), never by judging the values: the rules judge values, this
//! says which whole file a person should remove. Nothing here sees more than one file.

use super::archive::{self, KeyStore};
use super::is_binary;
use super::report::FileKind;

/// KeePass's first signature, then the second one of KeePass 1 (`.kdb`), of KDBX's
/// pre-release and of KDBX (`.kdbx`).
const KEEPASS_SIGNATURE: [u8; 4] = [0x03, 0xd9, 0xa2, 0x9a];
const KEEPASS_VERSIONS: [[u8; 4]; 3] = [
    [0x65, 0xfb, 0x4b, 0xb5],
    [0x66, 0xfb, 0x4b, 0xb5],
    [0x67, 0xfb, 0x4b, 0xb5],
];

/// `.env.*` files made to be committed: templates without values, and dotenv-vault's
/// encrypted file.
const ENV_TEMPLATES: [&str; 5] = ["example", "sample", "template", "dist", "vault"];

/// Documentation shows a credentials file as an example: its name may say
/// `credentials`, it is not one.
const DOCUMENT_EXTENSIONS: [&str; 6] = [".md", ".markdown", ".rst", ".adoc", ".html", ".htm"];

/// A service account key file is about 2 KiB; a far larger JSON file holding one is data
/// (a state file), whose key the rules find as a value.
const SERVICE_ACCOUNT_MAX: usize = 1 << 20;

/// The kind of leak the file at `path` holding `data` is, if it is one.
pub(crate) fn kind(path: &str, data: &[u8]) -> Option<FileKind> {
    if data.is_empty() {
        return None;
    }
    if is_keepass(data) {
        return Some(FileKind::Keepass);
    }
    let name = file_name(path);
    // A key store by name: what its content says it is, PKCS#12 when it says nothing.
    if is_pkcs12_name(path) {
        return Some(match archive::keystore(data, Some(path)) {
            Some(store) => keystore_kind(store),
            None => FileKind::Pkcs12,
        });
    }
    let text_kind = text_kind(path, name)?;
    if is_binary(data) {
        return None;
    }
    let holds = match text_kind {
        FileKind::PrivateKey if is_key_extension(name) => holds_private_key(data),
        FileKind::PrivateKey => starts_as_private_key(data),
        FileKind::CloudCredentials if has_extension(name, ".json") => {
            data.len() <= SERVICE_ACCOUNT_MAX && is_service_account_key(data)
        }
        FileKind::CloudCredentials => is_aws_credentials(path, data),
        FileKind::Npmrc => holds_npm_credentials(data),
        FileKind::Pypirc => holds_pypi_password(data),
        FileKind::Netrc => holds_netrc_password(data),
        FileKind::EnvFile => holds_env_value(data),
        FileKind::Pkcs12 | FileKind::Jks | FileKind::Jceks | FileKind::Keepass => false,
    };
    holds.then_some(text_kind)
}

/// True when `path` is named as a PKCS#12 key store (`.p12`, `.pfx`): such a file is
/// reported by its name, so the look at binary content leaves it alone.
pub(crate) fn is_pkcs12_name(path: &str) -> bool {
    let name = file_name(path);
    has_extension(name, ".p12") || has_extension(name, ".pfx")
}

pub(crate) fn keystore_kind(store: KeyStore) -> FileKind {
    match store {
        KeyStore::Jks => FileKind::Jks,
        KeyStore::Jceks => FileKind::Jceks,
        KeyStore::Pkcs12 => FileKind::Pkcs12,
    }
}

fn is_keepass(data: &[u8]) -> bool {
    data.starts_with(&KEEPASS_SIGNATURE)
        && data
            .get(4..8)
            .is_some_and(|version| KEEPASS_VERSIONS.iter().any(|v| v == version))
}

/// The kind a text file named so may be, before its content is looked at.
fn text_kind(path: &str, name: &str) -> Option<FileKind> {
    let kind = if is_key_extension(name) {
        FileKind::PrivateKey
    } else if has_extension(name, ".json") || is_aws_credentials_name(path, name) {
        FileKind::CloudCredentials
    } else if name == ".npmrc" {
        FileKind::Npmrc
    } else if name == ".pypirc" {
        FileKind::Pypirc
    } else if name == ".netrc" || name == "_netrc" {
        FileKind::Netrc
    } else if is_env_name(name) {
        FileKind::EnvFile
    } else if name.starts_with("id_") && !has_extension(name, ".pub") {
        FileKind::PrivateKey
    } else {
        return None;
    };
    Some(kind)
}

/// The last component of a repository path; a tree a ref names writes its paths as
/// `refs/tags/v1:dir/file`.
fn file_name(path: &str) -> &str {
    path.rsplit(['/', ':']).next().unwrap_or(path)
}

fn is_key_extension(name: &str) -> bool {
    [".pem", ".key", ".ppk"]
        .iter()
        .any(|ext| has_extension(name, ext))
}

fn has_extension(name: &str, extension: &str) -> bool {
    name.len() > extension.len()
        && name
            .get(name.len() - extension.len()..)
            .is_some_and(|end| end.eq_ignore_ascii_case(extension))
}

fn is_env_name(name: &str) -> bool {
    if name == ".env" {
        return true;
    }
    let Some(variant) = name.strip_prefix(".env.") else {
        return false;
    };
    // `.env.local.example` is a template as much as `.env.example` is.
    !variant.is_empty()
        && !variant
            .split('.')
            .any(|part| ENV_TEMPLATES.iter().any(|t| part.eq_ignore_ascii_case(t)))
}

/// The AWS CLI's own file, or a file whose name says credentials or configuration and
/// might hold its INI form.
fn is_aws_credentials_name(path: &str, name: &str) -> bool {
    if is_aws_shared_file(path) {
        return true;
    }
    let document = DOCUMENT_EXTENSIONS
        .iter()
        .any(|ext| has_extension(name, ext));
    contains_ignoring_case(name.as_bytes(), b"credential") && !document
        || [".ini", ".cfg", ".conf"]
            .iter()
            .any(|ext| has_extension(name, ext))
}

fn contains_ignoring_case(text: &[u8], word: &[u8]) -> bool {
    (text.windows(word.len())).any(|w| w.eq_ignore_ascii_case(word))
}

fn is_aws_shared_file(path: &str) -> bool {
    path.strip_suffix(".aws/credentials")
        .is_some_and(|before| before.is_empty() || before.ends_with(['/', ':']))
}

/// A PEM or OpenSSH private key, or a PuTTY key, from the first line on (an `id_*` file
/// that is anything else is not an SSH key).
fn starts_as_private_key(data: &[u8]) -> bool {
    let start = data.trim_ascii_start();
    let first_line = start.split(|&b| b == b'\n').next().unwrap_or_default();
    first_line.starts_with(b"PuTTY-User-Key-File-") || is_private_key_header(first_line)
}

/// A private key block anywhere: a `.pem` may hold certificates before its key.
fn holds_private_key(data: &[u8]) -> bool {
    memchr::memmem::find(data, b"PuTTY-User-Key-File-").is_some()
        || memchr::memmem::find_iter(data, b"-----BEGIN ").any(|at| {
            let line = data[at..].split(|&b| b == b'\n').next().unwrap_or_default();
            is_private_key_header(line)
        })
}

/// `-----BEGIN RSA PRIVATE KEY-----`, `-----BEGIN ENCRYPTED PRIVATE KEY-----`,
/// `-----BEGIN OPENSSH PRIVATE KEY-----`, `-----BEGIN PGP PRIVATE KEY BLOCK-----`: a
/// key protected by a passphrase is still one to remove.
fn is_private_key_header(line: &[u8]) -> bool {
    let line = line.trim_ascii_end();
    let Some(label) =
        (line.strip_prefix(b"-----BEGIN ")).and_then(|rest| rest.strip_suffix(b"-----"))
    else {
        return false;
    };
    label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK")
}

/// A Google Cloud service account key: `"type": "service_account"` and a
/// `"private_key"` with a value.
fn is_service_account_key(data: &[u8]) -> bool {
    let typed = memchr::memmem::find_iter(data, b"\"service_account\"").any(|at| {
        let before = data[..at].trim_ascii_end();
        before
            .strip_suffix(b":")
            .is_some_and(|key| key.trim_ascii_end().ends_with(b"\"type\""))
    });
    typed
        && memchr::memmem::find_iter(data, b"\"private_key\"").any(|at| {
            let after = data[at + b"\"private_key\"".len()..].trim_ascii_start();
            after
                .strip_prefix(b":")
                .map(<[u8]>::trim_ascii_start)
                .and_then(|value| value.strip_prefix(b"\""))
                .is_some_and(|value| !value.is_empty() && value[0] != b'"')
        })
}

/// An AWS shared credentials file: at `.aws/credentials`, a secret key with a value;
/// elsewhere, also a `[profile]` section, so that code assigning the name is not one.
/// AWS's documented example key (`…EXAMPLEKEY`) is no value.
fn is_aws_credentials(path: &str, data: &[u8]) -> bool {
    let mut section = is_aws_shared_file(path);
    let mut secret = false;
    for line in lines(data) {
        if line.starts_with(b"[") && line.ends_with(b"]") {
            section = true;
        } else if let Some((key, value)) = assignment(line, b"=")
            && key.eq_ignore_ascii_case(b"aws_secret_access_key")
            && has_value(value)
            && !contains_ignoring_case(value, b"example")
        {
            secret = true;
        }
    }
    section && secret
}

/// `_authToken`, `_auth` or `_password`, for the default registry or a scoped one
/// (`//registry.example/:_authToken=…`).
fn holds_npm_credentials(data: &[u8]) -> bool {
    lines(data).any(|line| {
        assignment(line, b"=").is_some_and(|(key, value)| {
            let setting = key.rsplit(|&b| b == b':').next().unwrap_or(key);
            matches!(setting, b"_authToken" | b"_auth" | b"_password") && has_value(value)
        })
    })
}

fn holds_pypi_password(data: &[u8]) -> bool {
    lines(data).any(|line| {
        (assignment(line, b"=").or_else(|| assignment(line, b":")))
            .is_some_and(|(key, value)| key.eq_ignore_ascii_case(b"password") && has_value(value))
    })
}

/// `.netrc` is a stream of tokens: `machine host login me password secret`, on one line
/// or many.
fn holds_netrc_password(data: &[u8]) -> bool {
    let mut tokens = data
        .split(|b| b.is_ascii_whitespace())
        .filter(|token| !token.is_empty());
    while let Some(token) = tokens.next() {
        if token == b"password" && tokens.next().is_some_and(has_value) {
            return true;
        }
    }
    false
}

/// `NAME=value` or `export NAME=value`, with a value.
fn holds_env_value(data: &[u8]) -> bool {
    lines(data).any(|line| {
        let line = line.strip_prefix(b"export ").unwrap_or(line);
        assignment(line, b"=").is_some_and(|(key, value)| {
            let named = key
                .first()
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
                && key
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            // ` # note` after the sign is a comment, not a value.
            named && !value.starts_with(b"#") && has_value(value)
        })
    })
}

/// The trimmed lines of `data` that are not blank or comments.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|line| !line.is_empty() && !line.starts_with(b"#") && !line.starts_with(b";"))
}

/// The trimmed name and value of `name <sign> value`.
fn assignment<'a>(line: &'a [u8], sign: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = memchr::memmem::find(line, sign)?;
    let key = line[..at].trim_ascii();
    (!key.is_empty()).then(|| (key, line[at + sign.len()..].trim_ascii()))
}

/// Whether a value is one: not empty once unquoted, and not a reference to a value kept
/// elsewhere (`${NPM_TOKEN}`, `$TOKEN`), which is how such files are meant to be
/// committed.
fn has_value(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let unquoted = match value {
        [b'"', inner @ .., b'"'] | [b'\'', inner @ .., b'\''] => inner.trim_ascii(),
        _ => value,
    };
    let reference = unquoted.starts_with(b"${") && unquoted.ends_with(b"}")
        || unquoted.first() == Some(&b'$')
            && unquoted[1..]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    !unquoted.is_empty() && !reference
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENSSH: &[u8] = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

    #[test]
    fn ssh_private_key_files_are_known_by_name_and_first_line() {
        for name in [
            "id_rsa",
            "home/.ssh/id_ed25519",
            "id_ecdsa_sk",
            "id_rsa.bak",
        ] {
            assert_eq!(kind(name, OPENSSH), Some(FileKind::PrivateKey), "{name}");
        }
        let pem = b"\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n";
        assert_eq!(kind("id_rsa", pem), Some(FileKind::PrivateKey));
        // A public key, or anything else under such a name, is not one.
        assert_eq!(kind("id_rsa.pub", OPENSSH), None);
        assert_eq!(kind("id_rsa", b"ssh-ed25519 AAAAC3Nza me@host\n"), None);
        assert_eq!(kind("src/id_map.rs", b"pub struct IdMap;\n"), None);
        assert_eq!(kind("keys/rsa", OPENSSH), None);
    }

    #[test]
    fn pem_key_and_ppk_files_count_when_they_hold_a_private_key_block() {
        let bundle = [
            &b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"[..],
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\r\nMIIF\n",
        ]
        .concat();
        assert_eq!(
            kind("certs/server.pem", &bundle),
            Some(FileKind::PrivateKey)
        );
        assert_eq!(kind("tls.KEY", OPENSSH), Some(FileKind::PrivateKey));
        let ppk = b"PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n";
        assert_eq!(kind("deploy.ppk", ppk), Some(FileKind::PrivateKey));
        let pgp = b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF\n";
        assert_eq!(kind("signing.key", pgp), Some(FileKind::PrivateKey));
        // A certificate alone, a public key, a licence key are not.
        assert_eq!(
            kind(
                "ca.pem",
                b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
            ),
            None
        );
        assert_eq!(kind("pub.pem", b"-----BEGIN PUBLIC KEY-----\nMFkw\n"), None);
        assert_eq!(kind("licence.key", b"ABCD-EFGH-IJKL\n"), None);
        // Code that names the header is not a key.
        assert_eq!(
            kind(
                "parse.key",
                b"if line == \"-----BEGIN RSA PRIVATE KEY-----\" {\n"
            ),
            None
        );
    }

    #[test]
    fn pkcs12_names_are_key_stores_whatever_their_content_says() {
        assert_eq!(
            kind("certs/client.p12", b"\x30\x82garbage"),
            Some(FileKind::Pkcs12)
        );
        assert_eq!(
            kind("Client.PFX", b"not der at all"),
            Some(FileKind::Pkcs12)
        );
        // A Java KeyStore misnamed .p12 is reported as what it is.
        let jks = [0xfe, 0xed, 0xfe, 0xed, 0, 0, 0, 2, 0, 0, 0, 0];
        assert_eq!(kind("store.p12", &jks), Some(FileKind::Jks));
        assert_eq!(kind("empty.p12", b""), None);
        assert!(is_pkcs12_name("refs/tags/v1:a.pfx"));
        assert!(!is_pkcs12_name("p12"));
    }

    #[test]
    fn keepass_databases_are_known_by_their_signatures_under_any_name() {
        let kdbx = [0x03, 0xd9, 0xa2, 0x9a, 0x67, 0xfb, 0x4b, 0xb5, 0, 0, 4, 0];
        assert_eq!(kind("Passwords.kdbx", &kdbx), Some(FileKind::Keepass));
        assert_eq!(kind("backup.bin", &kdbx), Some(FileKind::Keepass));
        let kdb = [0x03, 0xd9, 0xa2, 0x9a, 0x65, 0xfb, 0x4b, 0xb5];
        assert_eq!(kind("old.kdb", &kdb), Some(FileKind::Keepass));
        assert_eq!(kind("x.kdbx", &kdbx[..6]), None);
        assert_eq!(kind("x.kdbx", &[0x03, 0xd9, 0xa2, 0x9a, 0, 0, 0, 0]), None);
    }

    #[test]
    fn a_service_account_key_is_cloud_credentials_and_other_json_is_not() {
        let key = br#"{
  "type" : "service_account",
  "project_id": "billing-prod",
  "private_key_id": "8f0c",
  "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
  "client_email": "deploy@billing-prod.iam.gserviceaccount.com"
}"#;
        assert_eq!(
            kind("credentials.json", key),
            Some(FileKind::CloudCredentials)
        );
        assert_eq!(
            kind("ops/gcp-key.JSON", key),
            Some(FileKind::CloudCredentials)
        );
        let template = br#"{"type": "service_account", "private_key_id": "", "private_key": ""}"#;
        assert_eq!(kind("credentials.json", template), None);
        let schema = br#"{"enum": ["service_account", "user"], "private_key": "string"}"#;
        assert_eq!(kind("schema.json", schema), None);
        assert_eq!(kind("key.txt", key), None);
    }

    #[test]
    fn aws_credentials_files_need_a_secret_key_with_a_value() {
        let file = b"[default]\naws_access_key_id = AKIAQ3EGRB5LVDWXHK7N\naws_secret_access_key = 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\n";
        assert_eq!(
            kind(".aws/credentials", file),
            Some(FileKind::CloudCredentials)
        );
        assert_eq!(
            kind("home/ci/.aws/credentials", file),
            Some(FileKind::CloudCredentials)
        );
        assert_eq!(
            kind("deploy/aws-credentials", file),
            Some(FileKind::CloudCredentials)
        );
        assert_eq!(kind("boto.cfg", file), Some(FileKind::CloudCredentials));
        // No section: code that happens to use the name.
        let code = b"aws_secret_access_key = os.environ['AWS_SECRET']\n";
        assert_eq!(kind("credentials_helper.conf", code), None);
        // The shared file itself needs no section, but a value.
        assert_eq!(
            kind(
                ".aws/credentials",
                b"aws_secret_access_key = k3Fq9Vd+2mXw7LpRz8Tn\n"
            ),
            Some(FileKind::CloudCredentials)
        );
        assert_eq!(
            kind(".aws/credentials", b"[default]\naws_secret_access_key =\n"),
            None
        );
        assert_eq!(kind("docs/setup.md", file), None);
        assert_eq!(kind("docs/aws-credentials.md", file), None);
        let documented =
            b"[default]\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n";
        assert_eq!(kind(".aws/credentials", documented), None);
        assert_eq!(
            kind("my.aws/credentials", file),
            Some(FileKind::CloudCredentials)
        );
    }

    #[test]
    fn package_manager_files_count_with_a_credential_that_has_a_value() {
        assert_eq!(
            kind(".npmrc", b"registry=https://registry.npmjs.org/\n//registry.npmjs.org/:_authToken=npm_abcdefghijklmnop\n"),
            Some(FileKind::Npmrc)
        );
        assert_eq!(
            kind("web/.npmrc", b"_auth = dXNlcjpwYXNz\n"),
            Some(FileKind::Npmrc)
        );
        // A reference to the environment is how an .npmrc is meant to be committed.
        assert_eq!(
            kind(".npmrc", b"//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n"),
            None
        );
        assert_eq!(kind(".npmrc", b"_authToken=\nsave-exact=true\n"), None);
        assert_eq!(
            kind(
                ".pypirc",
                b"[pypi]\nusername = __token__\npassword = pypi-AgEIcHlwaS5vcmc\n"
            ),
            Some(FileKind::Pypirc)
        );
        assert_eq!(kind(".pypirc", b"[pypi]\nusername: me\npassword:\n"), None);
        assert_eq!(
            kind(
                ".netrc",
                b"machine api.example.test\n  login ci\n  password s3cr3t-v4lue\n"
            ),
            Some(FileKind::Netrc)
        );
        assert_eq!(
            kind("_netrc", b"machine h login ci password hunter2\n"),
            Some(FileKind::Netrc)
        );
        assert_eq!(kind(".netrc", b"machine h login ci\n"), None);
    }

    #[test]
    fn env_files_count_with_one_value_and_templates_never() {
        let env = b"# local settings\nDEBUG=\nexport DATABASE_URL=postgres://app:pw@db/app\n";
        for name in [".env", "api/.env.production", ".env.local"] {
            assert_eq!(kind(name, env), Some(FileKind::EnvFile), "{name}");
        }
        for name in [
            ".env.example",
            ".env.sample",
            ".env.template",
            ".env.dist",
            ".env.local.example",
            ".env.vault",
            ".envrc",
            "env",
        ] {
            assert_eq!(kind(name, env), None, "{name}");
        }
        assert_eq!(
            kind(
                ".env",
                b"# fill these in\nAPI_KEY=\nSECRET=\"\"\nTOKEN= # ask ops\n"
            ),
            None
        );
        assert_eq!(kind(".env", b"API_KEY=${VAULT_API_KEY}\n"), None);
        assert_eq!(kind(".env", b"PORT=8080\n"), Some(FileKind::EnvFile));
    }
}
