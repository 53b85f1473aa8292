#!/bin/sh
# usage: resize_droplet.sh <droplet-id> <size>
curl -sS -X POST \
  -H "Content-Type: application/json" \
  -H "Authorization: Bearer dop_v1_38d5faff3f1a4f042655d0d3e0960819bbbc9094323eae191b743da46d008b62" \
  -d "{\"type\":\"resize\",\"size\":\"$2\"}" \
  "https://api.digitalocean.com/v2/droplets/$1/actions"
