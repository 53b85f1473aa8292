variable "db_password" {
  type      = string
  sensitive = true
}

resource "aws_db_instance" "main" {
  password = var.db_password
  username = "app"
}

resource "random_password" "api" {
  length  = 32
  special = true
}
