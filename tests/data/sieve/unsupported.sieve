# constructs with no mailrules equivalent: each reported with its line
require ["fileinto", "envelope", "vacation", "variables", "reject"];
if envelope :is "from" "a@b.example" {
  fileinto "Env";
}
redirect "other@example.org";
vacation :days 3 "I am away";
set "folder" "x";
if header :contains "subject" "no" {
  reject "go away";
}
if header :contains "subject" "ok" {
  fileinto "Ok";
}
