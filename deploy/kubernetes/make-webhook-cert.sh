#!/bin/sh
# Makes the webhook's TLS: a self-signed CA, a serving certificate for the Service's DNS names
# signed by it, the Secret meshlet-webhook-tls, and the CA as the webhook's caBundle.
#   usage: deploy/kubernetes/make-webhook-cert.sh [DIR]   (then: kubectl apply -k deploy/kubernetes)
# With cert-manager, use a Certificate for the same names and the cert-manager.io/inject-ca-from
# annotation on the MutatingWebhookConfiguration instead.
set -eu
dir=${1:-$(mktemp -d)}
svc=meshlet-control-plane
ns=meshlet-system
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=meshlet-webhook-ca" -keyout "$dir/ca.key" -out "$dir/ca.crt"
openssl req -newkey rsa:2048 -nodes -subj "/CN=$svc.$ns.svc" -keyout "$dir/tls.key" -out "$dir/tls.csr"
printf 'subjectAltName=DNS:%s,DNS:%s.%s,DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\n' "$svc" "$svc" "$ns" "$svc" "$ns" "$svc" "$ns" > "$dir/san.ext"
openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 825 -extfile "$dir/san.ext" -out "$dir/tls.crt"
if [ "${DRY_RUN:-}" = 1 ]; then
  echo "certificates in $dir"
  exit 0
fi
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
kubectl -n "$ns" create secret tls meshlet-webhook-tls --cert "$dir/tls.crt" --key "$dir/tls.key" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f "$(dirname "$0")/webhook.yaml"
kubectl patch mutatingwebhookconfiguration meshlet-injector --type=json \
  -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$(base64 -w0 < "$dir/ca.crt")\"}]"
