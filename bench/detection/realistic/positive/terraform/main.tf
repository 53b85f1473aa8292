terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  region     = "us-east-1"
  access_key = "AKIACFBSOGVL2A5DIPYO"
  secret_key = "5bMizjSwsbSLm9/ZCkY7KUHDMGiKSWmLd6EDTMby"
}

resource "aws_s3_bucket" "logs" {
  bucket = "example-access-logs"
}
