#!/bin/sh
# Controller side of the scenario, made by hand with openssl and mosquitto_passwd (a real deploy gets them from
# mlpacker.core.pipeline_credentials): a CA, the listener's certificate for the host address 127.0.0.1 and its
# key, a second CA the broker's certificate does not come from, and for each pipeline a service user and a
# client user (password files, password-file lines, ACL lines).
# Usage: credentials.sh <folder> <pipeline>...
set -eu
out=$1
shift
umask 077
rm -rf "$out"
mkdir -p "$out"
cd "$out"

ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ec_key ca.key
openssl req -x509 -new -key ca.key -out ca.crt -days 2 -subj "/CN=molecule broker CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
ec_key other-ca.key
openssl req -x509 -new -key other-ca.key -out other-ca.crt -days 2 -subj "/CN=molecule other CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

# Only the host address in the certificate's names: a client reaching the broker by another name is refused.
ec_key broker.key
openssl req -new -key broker.key -out broker.csr -subj "/CN=127.0.0.1"
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' > broker.ext
openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out broker.crt -days 2 \
  -extfile broker.ext 2>/dev/null
rm -f broker.csr broker.ext ca.srl

for pipeline in "$@"; do
  mkdir "$pipeline"
  : > "$pipeline/acl"
  : > "$pipeline/passwd"
  for role in svc client; do
    user="mlp-$pipeline-$role"
    openssl rand -hex 16 > "$pipeline/$user.password"
    password=$(cat "$pipeline/$user.password")
    # The password on standard input, not on the command line.
    printf '%s\n%s\n' "$password" "$password" | mosquitto_passwd "$pipeline/passwd" "$user" >/dev/null
  done
  # Each service reads its input and writes its output and errors; the client the other way round.
  cat >> "$pipeline/acl" <<ACL
user mlp-$pipeline-svc
topic read mlpacker/$pipeline/in
topic write mlpacker/$pipeline/out
topic write mlpacker/$pipeline/errors
user mlp-$pipeline-client
topic write mlpacker/$pipeline/in
topic read mlpacker/$pipeline/out
topic read mlpacker/$pipeline/errors
ACL
done
