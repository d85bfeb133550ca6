#!/usr/bin/env bash
# Makes the test certificates in this directory (committed; valid for 100
# years): a CA, the gateway's certificate for localhost / 127.0.0.1 (and a
# renewed one, server2), a client
# certificate the CA signed (CN=tls-user), and one another CA signed, which
# the gateway must refuse. Run it again to replace them all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
days=36500
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -subj "/CN=amqp-gateway test CA" -days $days -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
issue() { # name subject extensions ca
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%s\n' "$3" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$4.pem" -CAkey "$4.key" -CAcreateserial -days $days \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth" ca
issue server2 "/O=renewed/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth" ca
issue client "/O=amqp-gateway tests/CN=tls-user" "extendedKeyUsage=clientAuth" ca
key other-ca.key
openssl req -x509 -new -key other-ca.key -subj "/CN=some other CA" -days $days -out other-ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
issue stranger "/CN=tls-user" "extendedKeyUsage=clientAuth" other-ca
rm -f ./*.srl other-ca.key ca.key
