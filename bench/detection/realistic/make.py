#!/usr/bin/env python3
"""Recreate the realistic detection corpus: positive/, negative/ and labels.json.

Every credential below is fake, drawn from a seeded random.Random in the
provider's real format. labels.json lists each planted value as it reads once
decoded (base64 Kubernetes data decoded, URL passwords alone, Docker `auth` as
the base64 string itself, a base64 PEM as its BEGIN line).

    python3 bench/detection/realistic/make.py      # rewrites the corpus in place
"""
import base64
import json
import os
import shutil
import string
import uuid
import zlib
from random import Random

HERE = os.path.dirname(os.path.abspath(__file__))
rng = Random(20261207)
B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
B64 = string.ascii_letters + string.digits + "+/"
B64URL = string.ascii_letters + string.digits + "-_"
HEX = "0123456789abcdef"
RSA_BEGIN = "-----BEGIN RSA PRIVATE KEY-----"


def pick(alphabet, n):
    return "".join(rng.choice(alphabet) for _ in range(n))


def b62(n, width=6):
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = B62[r] + out
    return out.rjust(width, "0")


def checksummed(prefix):  # GitHub classic / npm token: 30 chars + base62(crc32)
    body = pick(B62, 30)
    return f"{prefix}_{body}{b62(zlib.crc32(body.encode()))}"


def password(symbols="!%^*-_+.~"):
    """16-24 chars, starts with a letter, always mixes letters, digits, symbols."""
    while True:
        pw = rng.choice(string.ascii_letters) + pick(string.ascii_letters + string.digits + symbols, rng.randint(15, 23))
        if any(c.isdigit() for c in pw) and any(c in symbols for c in pw) and any(c.isupper() for c in pw):
            return pw


def url_password():  # safe inside a URL's user-info without percent-encoding
    return password("-_.~")


def aws():
    return "AKIA" + pick(string.ascii_uppercase + "234567", 16), pick(B64, 40)


def slack_bot():
    return f"xoxb-{pick(string.digits, 12)}-{pick(string.digits, 13)}-{pick(string.ascii_letters + string.digits, 24)}"


def stripe_secret():
    return "sk_live_" + pick(string.ascii_letters + string.digits, 24)


def openai_key():
    return "sk-proj-" + pick(B64URL, 74) + "T3BlbkFJ" + pick(B64URL, 74)


def sendgrid():
    return f"SG.{pick(B64URL, 22)}.{pick(B64URL, 43)}"


def pypi_token():  # a v2 macaroon: location, identifier, a caveat, a 32-byte signature
    r = Random(pick(B64URL, 160))  # drawn as before, so that the other values stay the same

    def field(kind, data):  # every length here is under 128: a one-byte varint
        return bytes([kind, len(data)]) + data

    identifier = str(uuid.UUID(int=r.getrandbits(128), version=4)).encode()
    caveat = b'{"permissions": "user", "version": 1}'
    macaroon = (b"\x02" + field(1, b"pypi.org") + field(2, identifier) + b"\x00"
                + field(2, caveat) + b"\x00\x00" + field(6, r.randbytes(32)))
    return "pypi-" + base64.urlsafe_b64encode(macaroon).decode().rstrip("=")


def b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


def pem(kind, der):
    body = b64(der)
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----", ""])


def rsa_private_pem():  # PKCS#1 shape (MIIEpAIBAAKCAQEA...), random contents
    return pem("RSA PRIVATE KEY", bytes.fromhex("308204a40201000282010100") + rng.randbytes(1180))


def certificate_pem():
    return pem("CERTIFICATE", bytes.fromhex("308203") + rng.randbytes(790))


def jwt_sa_token():
    head = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": pick(B64URL, 43)}).encode()).decode().rstrip("=")
    claims = {"iss": "kubernetes/serviceaccount", "kubernetes.io/serviceaccount/namespace": "ci",
              "kubernetes.io/serviceaccount/secret.name": "deployer-token-7xq2k",
              "kubernetes.io/serviceaccount/service-account.name": "deployer",
              "sub": "system:serviceaccount:ci:deployer"}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{head}.{body}.{pick(B64URL, 342)}"


FILES, LABELS = {}, {}


def positive(path, text, *secrets):
    FILES["positive/" + path] = text
    LABELS["positive/" + path] = list(secrets)


def negative(path, text):
    FILES["negative/" + path] = text


# ---------------------------------------------------------------- positives
db_pw, stripe, jwt_secret = url_password(), stripe_secret(), pick(HEX, 64)
positive(".env", f"""# local development
NODE_ENV=development
PORT=3000
DATABASE_URL=postgres://app:{db_pw}@localhost:5432/app_dev
STRIPE_SECRET_KEY={stripe}
JWT_SECRET={jwt_secret}
LOG_LEVEL=debug
""", db_pw, stripe, jwt_secret)

kid, ksec = aws()
sg = sendgrid()
positive(".env.production", f"""APP_URL=https://app.example.com
AWS_REGION=eu-west-1
AWS_ACCESS_KEY_ID={kid}
AWS_SECRET_ACCESS_KEY={ksec}
S3_BUCKET=example-prod-uploads
SENDGRID_API_KEY={sg}
MAIL_FROM=no-reply@example.com
""", kid, ksec, sg)

gho, npm = checksummed("gho"), checksummed("npm")
positive(".env.staging", f"""# staging deploy - copied from 1password, rotate after demo
GITHUB_TOKEN={gho}
NPM_TOKEN={npm}
FEATURE_FLAGS=new-checkout,dark-mode
""", gho, npm)

ghp = checksummed("ghp")
positive("k8s/github-token-secret.yaml", f"""apiVersion: v1
kind: Secret
metadata:
  name: ci-github-token
  namespace: ci
  labels:
    app.kubernetes.io/part-of: release-bot
type: Opaque
data:
  GITHUB_TOKEN: {b64(ghp)}
  GITHUB_ORG: {b64("example-org")}
""", ghp)

pg_pw = url_password()
positive("k8s/database-secret.yaml", f"""apiVersion: v1
kind: Secret
metadata:
  name: orders-db
  namespace: production
type: Opaque
data:
  DATABASE_URL: {b64(f"postgresql://orders:{pg_pw}@orders-db.production.svc.cluster.local:5432/orders?sslmode=require")}
  DB_POOL_SIZE: {b64("20")}
""", pg_pw)

admin_pw = password()
positive("k8s/grafana-admin-secret.yaml", f"""---
apiVersion: v1
kind: Secret
metadata:
  name: grafana-admin
  namespace: monitoring
type: Opaque
data:
  admin-user: {b64("admin")}
  admin-password: {b64(admin_pw)}
""", admin_pw)

ghcr = checksummed("ghp")
ghcr_auth = b64(f"ci-bot:{ghcr}")
dockercfg = json.dumps({"auths": {"ghcr.io": {"username": "ci-bot", "password": ghcr, "auth": ghcr_auth}}})
positive("k8s/regcred.yaml", f"""apiVersion: v1
kind: Secret
metadata:
  name: regcred
  namespace: default
type: kubernetes.io/dockerconfigjson
data:
  .dockerconfigjson: {b64(dockercfg)}
""", ghcr_auth, ghcr)

hub_auth = b64(f"jdoe:{password()}")
positive(".docker/config.json", json.dumps({
    "auths": {"https://index.docker.io/v1/": {"auth": hub_auth},
              "registry.gitlab.com": {}},
    "credsStore": "", "currentContext": "default",
    "HttpHeaders": {"User-Agent": "Docker-Client/24.0.7 (linux)"}}, indent="\t") + "\n", hub_auth)

sa_token = jwt_sa_token()
positive(".kube/config", f"""apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {b64(certificate_pem())}
    server: https://10.20.0.1:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
- context:
    cluster: kubernetes
    namespace: ci
    user: deployer
  name: deployer@kubernetes
current-context: kubernetes-admin@kubernetes
kind: Config
preferences: {{}}
users:
- name: kubernetes-admin
  user:
    client-certificate-data: {b64(certificate_pem())}
    client-key-data: {b64(rsa_private_pem())}
- name: deployer
  user:
    token: {sa_token}
""", RSA_BEGIN, sa_token)

positive("k8s/ingress-tls.yaml", f"""apiVersion: v1
kind: Secret
metadata:
  name: shop-example-com-tls
  namespace: ingress
type: kubernetes.io/tls
data:
  tls.crt: {b64(certificate_pem())}
  tls.key: {b64(rsa_private_pem())}
""", RSA_BEGIN)

wf_tok, docker_pw = checksummed("ghp"), password()
positive(".github/workflows/deploy.yml", f"""name: deploy

on:
  push:
    branches: [main]

jobs:
  deploy:
    runs-on: ubuntu-latest
    env:
      GH_TOKEN: {wf_tok}  # TODO move to secrets
    steps:
      - uses: actions/checkout@v4
      - name: Log in to registry
        run: echo '{docker_pw}' | docker login registry.example.com -u deploy --password-stdin
      - name: Create release
        run: gh release create "v${{{{ github.run_number }}}}" --generate-notes
""", wf_tok, docker_pw)

npm_wf = checksummed("npm")
positive(".github/workflows/publish.yml", f"""name: publish
on:
  release:
    types: [published]
jobs:
  publish:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-node@v4
        with:
          node-version: 20
          registry-url: https://registry.npmjs.org
      - run: npm ci
      - run: npm publish --access public
        env:
          NODE_AUTH_TOKEN: {npm_wf}
""", npm_wf)

glpat = "glpat-" + pick(B64URL, 20)
positive(".gitlab-ci.yml", f"""stages: [build, release]

variables:
  DOCKER_DRIVER: overlay2
  RELEASE_TOKEN: "{glpat}"

build:
  stage: build
  image: docker:24
  script:
    - docker build -t $CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA .

release:
  stage: release
  image: curlimages/curl:8.5.0
  script:
    - 'curl --header "PRIVATE-TOKEN: $RELEASE_TOKEN" --data "tag_name=$CI_COMMIT_TAG" "$CI_API_V4_URL/projects/$CI_PROJECT_ID/releases"'
  only: [tags]
""", glpat)

kid, ksec = aws()
positive("terraform/main.tf", f"""terraform {{
  required_providers {{
    aws = {{
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }}
  }}
}}

provider "aws" {{
  region     = "us-east-1"
  access_key = "{kid}"
  secret_key = "{ksec}"
}}

resource "aws_s3_bucket" "logs" {{
  bucket = "example-access-logs"
}}
""", kid, ksec)

kid, ksec = aws()
positive("terraform/prod.tfvars", f"""environment        = "prod"
instance_type      = "t3.medium"
aws_access_key_id  = "{kid}"
aws_secret_key     = "{ksec}"
allowed_cidrs      = ["10.0.0.0/8"]
""", kid, ksec)

oai = openai_key()
nb = {"cells": [
    {"cell_type": "markdown", "metadata": {}, "source": ["# Summarise support tickets\n"]},
    {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": [],
     "source": ["import pandas as pd\n", "from openai import OpenAI\n", "\n",
                f"client = OpenAI(api_key=\"{oai}\")\n", "df = pd.read_csv(\"tickets.csv\")"]},
    {"cell_type": "code", "execution_count": 2, "metadata": {},
     "outputs": [{"name": "stdout", "output_type": "stream", "text": ["1204 tickets\n"]}],
     "source": ["print(len(df), \"tickets\")"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                 "language_info": {"name": "python", "version": "3.11.6"}},
    "nbformat": 4, "nbformat_minor": 5}
positive("notebooks/ticket_summary.ipynb", json.dumps(nb, indent=1) + "\n", oai)

jdbc_pw, ds_pw = url_password(), password()
positive("src/main/resources/application.properties", f"""spring.application.name=billing
server.port=8080
spring.datasource.url=jdbc:postgresql://billing-db:5432/billing
spring.datasource.username=billing
spring.datasource.password={ds_pw}
reporting.datasource.url=jdbc:mysql://reports.internal:3306/reports?user=reporter&password={jdbc_pw}&useSSL=true
spring.jpa.hibernate.ddl-auto=validate
""", ds_pw, jdbc_pw)

stripe2, slack = stripe_secret(), slack_bot()
django_key = pick(string.ascii_lowercase + string.digits + "!@#$%^&*(-_=+)", 50)
positive("myproject/settings.py", f'''"""Django settings for myproject."""
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "{django_key}"
DEBUG = False
ALLOWED_HOSTS = ["shop.example.com"]

STRIPE_SECRET_KEY = "{stripe2}"
STRIPE_WEBHOOK_TOLERANCE = 300

SLACK_BOT_TOKEN = "{slack}"
SLACK_CHANNEL = "#orders"
''', django_key, stripe2, slack)

pgc, rpw = password(), url_password()
positive("docker-compose.yml", f"""services:
  db:
    image: postgres:16
    environment:
      POSTGRES_USER: app
      POSTGRES_PASSWORD: {pgc}
      POSTGRES_DB: app
  redis:
    image: redis:7-alpine
    command: redis-server --requirepass {rpw}
  web:
    build: .
    depends_on: [db, redis]
    environment:
      REDIS_URL: redis://:{rpw}@redis:6379/0
    ports:
      - "8000:8000"
""", pgc, rpw)

acct_key = b64(rng.randbytes(64))
positive("appsettings.Production.json", json.dumps({
    "Logging": {"LogLevel": {"Default": "Warning"}},
    "ConnectionStrings": {"Storage": "DefaultEndpointsProtocol=https;AccountName=examplestore01;"
                                     f"AccountKey={acct_key};EndpointSuffix=core.windows.net"},
    "AllowedHosts": "*"}, indent=2) + "\n", acct_key)

sig = b64(rng.randbytes(32)).replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
positive("scripts/upload_backup.sh", f"""#!/usr/bin/env bash
set -euo pipefail
# nightly backup to blob storage
STAMP=$(date +%F)
pg_dump -Fc app > "/tmp/app-$STAMP.dump"
azcopy copy "/tmp/app-$STAMP.dump" \\
  "https://examplebackups.blob.core.windows.net/pg/app-$STAMP.dump?sv=2022-11-02&ss=b&srt=co&sp=rwlac&se=2027-06-30T23:59:59Z&st=2026-01-01T00:00:00Z&spr=https&sig={sig}"
""", sig)

npmrc_tok = checksummed("npm")
positive(".npmrc", f"""registry=https://registry.npmjs.org/
//registry.npmjs.org/:_authToken={npmrc_tok}
save-exact=true
""", npmrc_tok)

pypi = pypi_token()
positive(".pypirc", f"""[distutils]
index-servers =
    pypi

[pypi]
username = __token__
password = {pypi}
""", pypi)

sg2 = sendgrid()
positive("config/production.js", f"""module.exports = {{
  port: process.env.PORT || 8080,
  mail: {{
    provider: 'sendgrid',
    apiKey: '{sg2}',
    from: 'Example Support <support@example.com>',
  }},
  cache: {{ ttlSeconds: 600 }},
}};
""", sg2)

do_tok = "dop_v1_" + pick(HEX, 64)
positive("scripts/resize_droplet.sh", f"""#!/bin/sh
# usage: resize_droplet.sh <droplet-id> <size>
curl -sS -X POST \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer {do_tok}" \\
  -d "{{\\"type\\":\\"resize\\",\\"size\\":\\"$2\\"}}" \\
  "https://api.digitalocean.com/v2/droplets/$1/actions"
""", do_tok)

gh_curl = checksummed("ghp")
positive("scripts/open_issue.sh", f"""#!/usr/bin/env bash
curl -s -X POST https://api.github.com/repos/example-org/infra/issues \\
  -H "Accept: application/vnd.github+json" \\
  -H "Authorization: Bearer {gh_curl}" \\
  -d "{{\\"title\\": \\"Nightly job failed\\"}}"
""", gh_curl)

helm_pw, helm_slack = password(), slack_bot()
positive("charts/api/values.yaml", f"""replicaCount: 2
image:
  repository: registry.example.com/api
  tag: "1.14.2"
postgresql:
  enabled: true
  auth:
    username: api
    password: "{helm_pw}"
    database: api
alerting:
  slackToken: {helm_slack}
resources:
  limits:
    memory: 512Mi
""", helm_pw, helm_slack)

mysql_pw, kid2, ksec2 = password(), *aws()
positive("ansible/group_vars/all.yml", f"""---
mysql_root_password: "{mysql_pw}"
mysql_databases:
  - name: wordpress
backup_s3_bucket: example-db-backups
backup_aws_access_key: {kid2}
backup_aws_secret_key: {ksec2}
ntp_servers: [0.pool.ntp.org, 1.pool.ntp.org]
""", mysql_pw, kid2, ksec2)

mvn_pw = password()
positive(".m2/settings.xml", f"""<?xml version="1.0" encoding="UTF-8"?>
<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0">
  <servers>
    <server>
      <id>nexus-releases</id>
      <username>deployment</username>
      <password>{mvn_pw}</password>
    </server>
  </servers>
  <mirrors>
    <mirror>
      <id>nexus</id>
      <url>https://nexus.example.com/repository/maven-public/</url>
      <mirrorOf>*</mirrorOf>
    </mirror>
  </mirrors>
</settings>
""", mvn_pw)

rails_pw = password()
positive("config/database.yml", f"""default: &default
  adapter: postgresql
  encoding: unicode
  pool: <%= ENV.fetch("RAILS_MAX_THREADS") {{ 5 }} %>

production:
  <<: *default
  host: db.internal.example.com
  database: shop_production
  username: shop
  password: "{rails_pw}"
""", rails_pw)

# ---------------------------------------------------------------- negatives
negative(".env.example", """# copy to .env and fill in
DATABASE_URL=postgres://app:<password>@localhost:5432/app_dev
STRIPE_SECRET_KEY=<your-stripe-key>
GITHUB_TOKEN=<your-token>
JWT_SECRET=changeme
SENDGRID_API_KEY=xxxxxxxxxxxxxxxxxxxxxxxx
AWS_SECRET_ACCESS_KEY=
""")

negative("docker-compose.yml", """services:
  db:
    image: postgres:16
    environment:
      POSTGRES_USER: app
      POSTGRES_PASSWORD: ${DB_PASSWORD}
  web:
    build: .
    environment:
      DATABASE_URL: postgres://app:${DB_PASSWORD}@db:5432/app
      REDIS_URL: redis://:${REDIS_PASSWORD:-}@redis:6379/0
""")

negative(".github/workflows/ci.yml", """name: ci
on: [push, pull_request]
jobs:
  test:
    runs-on: ubuntu-latest
    env:
      GH_TOKEN: ${{ secrets.GITHUB_TOKEN }}
      NPM_TOKEN: ${{ secrets.NPM_TOKEN }}
      AWS_SECRET_ACCESS_KEY: ${{ secrets.AWS_SECRET_ACCESS_KEY }}
    steps:
      - uses: actions/checkout@v4
      - run: make test
""")

negative("docs/aws-credentials.md", """# Configuring AWS credentials

Example only - these are the placeholder values from the AWS documentation:

```ini
[default]
aws_access_key_id = AKIAIOSFODNN7EXAMPLE
aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
```
""")

negative("requirements.txt", "".join(
    f"{name}=={ver} \\\n    --hash=sha256:{pick(HEX, 64)} \\\n    --hash=sha256:{pick(HEX, 64)}\n"
    for name, ver in [("certifi", "2024.2.2"), ("idna", "3.6"), ("requests", "2.31.0"), ("urllib3", "2.2.1")]))

lock = {"name": "web", "version": "1.0.0", "lockfileVersion": 3, "requires": True, "packages": {
    "": {"name": "web", "version": "1.0.0", "dependencies": {"lodash": "^4.17.21", "ms": "^2.1.3"}}}}
for name, ver in [("lodash", "4.17.21"), ("ms", "2.1.3"), ("debug", "4.3.4")]:
    lock["packages"][f"node_modules/{name}"] = {
        "version": ver, "resolved": f"https://registry.npmjs.org/{name}/-/{name}-{ver}.tgz",
        "integrity": "sha512-" + b64(rng.randbytes(64)), "license": "MIT"}
negative("package-lock.json", json.dumps(lock, indent=2) + "\n")

negative("go.sum", "".join(
    f"{mod} {ver} h1:{b64(rng.randbytes(32))}\n{mod} {ver}/go.mod h1:{b64(rng.randbytes(32))}\n"
    for mod, ver in [("github.com/spf13/cobra", "v1.8.0"), ("golang.org/x/sys", "v0.18.0")]))

negative("CHANGELOG.md", "# Changelog\n\n## 2.3.0\n\n" + "".join(
    f"- {msg} ({pick(HEX, 40)})\n" for msg in
    ["Fix token refresh race", "Rotate signing keys on schedule", "Bump lodash to 4.17.21"]))

uuid = lambda: "-".join(pick(HEX, n) for n in (8, 4, 4, 4, 12))  # noqa: E731
negative("logs/api-access.log", "".join(
    f'2026-11-30T10:{i:02d}:11Z INFO request_id={uuid()} method=GET path=/v1/orders status=200 ms={rng.randint(3, 90)}\n'
    for i in range(6)))

negative("keys/deploy_key.pub", "ssh-rsa " + b64(b"\0\0\0\x07ssh-rsa\0\0\0\x03\x01\0\x01\0\0\x01\x01\0" + rng.randbytes(256))
         + " deploy@ci-runner\n")

negative("keys/jwt_public.pem", pem("PUBLIC KEY", bytes.fromhex(
    "30820122300d06092a864886f70d01010105000382010f003082010a0282010100") + rng.randbytes(256) + bytes.fromhex("0203010001")))

nginx_conf = b64("server { listen 80; location / { proxy_pass http://web:8000; } }\n")
robots = b64("User-agent: *\nDisallow: /admin\n")
negative("k8s/nginx-configmap.yaml", f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: nginx-extra
binaryData:
  default.conf: {nginx_conf}
  robots.txt: {robots}
data:
  LOG_FORMAT: json
""")

k8s_tpl = """apiVersion: v1
kind: Secret
metadata:
  name: {{ include "api.fullname" . }}
type: Opaque
stringData:
  DATABASE_PASSWORD: {{ .Values.postgresql.auth.password | quote }}
  API_TOKEN: {{ required "apiToken is required" .Values.apiToken | quote }}
"""
negative("charts/api/templates/secret.yaml", k8s_tpl)

negative("charts/api/values.yaml", """postgresql:
  auth:
    username: api
    password: ""          # set via --set or existingSecret
    existingSecret: api-db
apiToken: ""
""")

short = "ghp_" + pick(B62, 28)  # a real one has 36 chars after the prefix
negative("scripts/ci.env", f"GITHUB_TOKEN={short}\nGITHUB_REPOSITORY=example-org/web\n")

body = pick(B62, 30)
bad = b62((zlib.crc32(body.encode()) + 1) % 2**32)
negative("tests/fixtures/bad_checksum_token.txt",
         f"# token whose checksum does not match, used by the token validator tests\nghp_{body}{bad}\n")

negative("web/src/stripe.js", f"""import {{ loadStripe }} from '@stripe/stripe-js';

// publishable key: safe to ship to the browser
export const stripePromise = loadStripe('pk_live_{pick(string.ascii_letters + string.digits, 24)}');
""")

negative("tests/test_settings.py", '''import pytest

FAKE_TOKEN = "test-token-not-real"


@pytest.fixture
def client_config():
    return {"api_key": "dummy", "password": "password", "secret": "xxxxxxxx"}


def test_login_rejects_placeholder(client_config):
    assert client_config["password"] == "password"
''')

negative("src/main/resources/application.properties", """spring.datasource.url=jdbc:postgresql://${DB_HOST:localhost}:5432/billing
spring.datasource.username=${DB_USER}
spring.datasource.password=${DB_PASSWORD}
""")

negative(".npmrc", "registry=https://registry.npmjs.org/\n//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n")

negative(".m2/settings.xml", """<settings>
  <servers>
    <server>
      <id>nexus-releases</id>
      <username>${env.NEXUS_USER}</username>
      <password>${env.NEXUS_PASSWORD}</password>
    </server>
  </servers>
</settings>
""")

negative("terraform/terraform.tfvars.example", """aws_access_key_id = "AKIAXXXXXXXXXXXXXXXX"
aws_secret_key    = "<your-secret-key>"
environment       = "dev"
""")

# ------------------------------------------- encodings, archives (drawn last, so the
# files above keep their values)
import gzip
import io
import zipfile


def zipped(members):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def utf16(text):
    return b"\xff\xfe" + text.encode("utf-16-le")


csv_id, csv_secret = aws()
positive("ops/credentials.csv", f"""User name,Password,Access key ID,Secret access key,Console login link
ci-deploy,,{csv_id},{csv_secret},https://123456789012.signin.aws.amazon.com/console
""", csv_id, csv_secret)

reg_slack = slack_bot()
positive("windows/acme-sync.reg", utf16(f"""Windows Registry Editor Version 5.00\r
\r
[HKEY_CURRENT_USER\\Software\\Acme\\Sync]\r
"Workspace"="acme-ops"\r
"SlackToken"="{reg_slack}"\r
"""), reg_slack)

json_pw, json_stripe = url_password(), stripe_secret()
escaped_stripe = "".join(f"\\u{ord(c):04x}" for c in json_stripe[:8]) + json_stripe[8:]
positive("config/app.json", '{"database": "postgres:\\/\\/billing:' + json_pw
         + '@db.internal:5432\\/billing", "stripe": "' + escaped_stripe + '"}\n', json_pw, json_stripe)

hook_id, hook_secret = aws()
while "+" not in hook_secret and "/" not in hook_secret:
    hook_id, hook_secret = aws()
quoted = hook_secret.replace("+", "%2B").replace("/", "%2F")
positive("deploy/sync-hook.sh", f"""#!/usr/bin/env bash
curl -fsS "https://sync.example.com/hook?aws_access_key_id={hook_id}&aws_secret_access_key={quoted}&region=eu-west-1"
""", hook_id, hook_secret)

hex_token = checksummed("ghp")
positive("fixtures/payload.txt", "payload = " + (f"GITHUB_TOKEN={hex_token}").encode().hex() + "\n", hex_token)

jar_pw, jar_token = password(), checksummed("ghp")
positive("dist/billing-service.jar", zipped([
    ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\nMain-Class: billing.App\r\n"),
    ("BOOT-INF/classes/application.properties",
     f"spring.datasource.url=jdbc:postgresql://db.internal:5432/billing\n"
     f"spring.datasource.password={jar_pw}\ngithub.token={jar_token}\n".encode()),
    ("BOOT-INF/classes/static/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))),
]), jar_pw, jar_token)

dump_slack = slack_bot()
positive("backup/settings.sql.gz", gzip.compress(
    f"-- settings dump\nINSERT INTO integrations (name, token) VALUES ('slack', '{dump_slack}');\n".encode(),
    mtime=0), dump_slack)

negative("dist/vendor.jar", zipped([
    ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\n"),
    ("application.properties", b"spring.datasource.password=${DB_PASSWORD}\ngithub.token=${GITHUB_TOKEN}\n"),
]))
negative("docs/links.html", '<a href="https://example.com/login?next=https%3A%2F%2Fexample.com%2Fdocs%2Fapi%3Fpage%3D2">'
         "docs</a>\n")
negative("windows/defaults.reg", utf16("""Windows Registry Editor Version 5.00\r
\r
[HKEY_CURRENT_USER\\Software\\Acme\\Sync]\r
"Workspace"="acme-ops"\r
"Interval"=dword:0000003c\r
"""))

# ---------------------------------------------------------------- write
for sub in ("positive", "negative"):
    shutil.rmtree(os.path.join(HERE, sub), ignore_errors=True)
for rel, text in FILES.items():
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(text, bytes) else "w") as f:
        f.write(text)
with open(os.path.join(HERE, "labels.json"), "w") as f:
    json.dump(LABELS, f, indent=2)
    f.write("\n")
print(f"{sum(k.startswith('positive/') for k in FILES)} positive, "
      f"{sum(k.startswith('negative/') for k in FILES)} negative, "
      f"{sum(map(len, LABELS.values()))} labelled values")
