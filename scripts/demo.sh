#!/usr/bin/env bash
# make demo: start an all-in-one cloud in a private data directory, import the
# test guest, boot it with the stock AWS CLI and show its serial console.
# The cloud keeps running in the foreground; Ctrl-C stops it and terminates
# the demo instance.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${CLIPPER_BIN:-bin/clipper}
GUEST=${CLIPPER_GUEST:-build/guest}
DATA=${CLIPPER_DEMO_DIR:-/var/lib/clipper-demo}
LISTEN=${CLIPPER_DEMO_LISTEN:-127.0.0.1:8773}
AWS=/usr/bin/aws   # Debian's AWS CLI v2 (the image's python has a v1 first on PATH)

mkdir -p "$DATA"
LOG="$DATA/clipper.log"
echo "==> starting 'clipper up' (data in $DATA, log in $LOG)"
# Its own session: Ctrl-C reaches this script, which terminates the demo
# instance through the API before it stops the cloud.
setsid "$BIN" up --data-dir "$DATA" --listen "$LISTEN" >"$LOG" 2>&1 &
UP=$!
ID=""
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$ID" ]; then
    echo "==> terminating $ID"
    "$AWS" --endpoint-url "$AWS_ENDPOINT_URL" ec2 terminate-instances --instance-ids "$ID" >/dev/null 2>&1 || true
    for _ in $(seq 30); do
      st=$("$AWS" --endpoint-url "$AWS_ENDPOINT_URL" ec2 describe-instances --instance-ids "$ID" \
        --query 'Reservations[0].Instances[0].State.Name' --output text 2>/dev/null || echo gone)
      [ "$st" = terminated ] || [ "$st" = gone ] && break
      sleep 1
    done
  fi
  kill -INT "$UP" 2>/dev/null || true
  wait "$UP" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for _ in $(seq 100); do
  [ -f "$DATA/aws.env" ] && break
  kill -0 "$UP" 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.1
done
# shellcheck disable=SC1091
. "$DATA/aws.env"
echo "==> cloud is up: $AWS_ENDPOINT_URL"

echo "==> importing the test guest"
AMI=$("$BIN" image import --name "demo-guest-$(date +%s)" --kernel "$GUEST/vmlinux" --initrd "$GUEST/initrd.img")
echo "    $AMI"

"$AWS" --endpoint-url "$AWS_ENDPOINT_URL" ec2 describe-key-pairs --key-names demo >/dev/null 2>&1 ||
  "$AWS" --endpoint-url "$AWS_ENDPOINT_URL" ec2 create-key-pair --key-name demo --query KeyFingerprint --output text >/dev/null

echo "==> aws ec2 run-instances --image-id $AMI --instance-type t3.micro --key-name demo"
ID=$("$AWS" --endpoint-url "$AWS_ENDPOINT_URL" ec2 run-instances --image-id "$AMI" --instance-type t3.micro \
  --key-name demo --count 1 --tag-specifications 'ResourceType=instance,Tags=[{Key=Name,Value=demo}]' \
  --query 'Instances[0].InstanceId' --output text)
echo "    $ID"
echo "==> aws ec2 wait instance-running --instance-ids $ID"
"$AWS" --endpoint-url "$AWS_ENDPOINT_URL" ec2 wait instance-running --instance-ids "$ID"
"$AWS" --endpoint-url "$AWS_ENDPOINT_URL" ec2 describe-instances --instance-ids "$ID" \
  --query 'Reservations[].Instances[].[InstanceId,State.Name,PrivateIpAddress,InstanceType,Placement.AvailabilityZone]' --output table

echo "==> waiting for the guest's console (aws ec2 get-console-output): DHCP, then IMDSv2"
for _ in $(seq 120); do
  out=$("$AWS" --endpoint-url "$AWS_ENDPOINT_URL" ec2 get-console-output --instance-id "$ID" --output text --query Output 2>/dev/null || true)
  if grep -q CLIPPER-MTU <<<"$out"; then
    echo "$out" | tail -n 20
    break
  fi
  sleep 1
done
cat <<EOT

Clipper is running (pid $UP). In another shell:
  . $DATA/aws.env
  aws ec2 describe-instances
Press Ctrl-C here to terminate the demo instance and stop the cloud.
EOT
wait "$UP"
