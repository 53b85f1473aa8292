#!/usr/bin/env bash
set -euo pipefail
# nightly backup to blob storage
STAMP=$(date +%F)
pg_dump -Fc app > "/tmp/app-$STAMP.dump"
azcopy copy "/tmp/app-$STAMP.dump" \
  "https://examplebackups.blob.core.windows.net/pg/app-$STAMP.dump?sv=2022-11-02&ss=b&srt=co&sp=rwlac&se=2027-06-30T23:59:59Z&st=2026-01-01T00:00:00Z&spr=https&sig=5nUxLkFBRm5tw0888ITokx99W%2FzP70yVcZaj%2FOhHlXU%3D"
