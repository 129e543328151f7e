echo "this file is not executable"
