environment        = "prod"
instance_type      = "t3.medium"
aws_access_key_id  = "AKIAVK4M4PC6A7MF6RKE"
aws_secret_key     = "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"
allowed_cidrs      = ["10.0.0.0/8"]
