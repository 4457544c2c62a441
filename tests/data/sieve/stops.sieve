# a stop with no action before it, keep vs fileinto in different blocks, discard then fileinto,
# fileinto :create, and an unconditional fileinto at the end
require ["fileinto", "imap4flags", "mailbox"];
if header :contains "subject" "skip" {
  stop;
}
if header :contains "subject" "mark" {
  addflag "\\Seen";
}
if header :contains "subject" "kk" {
  keep;
}
if header :contains "subject" "ff" {
  fileinto "F";
  stop;
}
if header :contains "subject" "junk" {
  discard;
}
if header :contains "subject" "save" {
  fileinto "Saved";
  stop;
}
if exists "X-Mailer" {
  fileinto :create "Mailers";
}
if not header :contains "subject" "junk" {
  fileinto "Rest";
}
