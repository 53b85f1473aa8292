#!/usr/bin/env bash
curl -s -X POST https://api.github.com/repos/example-org/infra/issues \
  -H "Accept: application/vnd.github+json" \
  -H "Authorization: Bearer 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" \
  -d "{\"title\": \"Nightly job failed\"}"
