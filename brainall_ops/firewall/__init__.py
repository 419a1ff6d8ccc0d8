"""Phase 2 firewall: one nftables table `inet brainall` per host and VM, from the role map's policy.

policy.py      the role map's `firewall:` section compiled per host (pure)
render.py      the ruleset, fail2ban jail and boot unit from templates/firewall/*.j2
diff.py        rule-level diff of two rulesets (a rendering, or nft's live listing)
record.py      the controller's record of each host's last confirmed ruleset
remote.py      the host-side steps of a commit-confirmed apply
sshpath.py     fresh SSH connections: confirmation, `plan --live`
facts.py       pyinfra facts; operations.py: pyinfra operations; deploy.py: the @deploy
live.py        read the live tables for `brainall-ops plan --live`
plan.py        this concern's part of `brainall-ops plan`
"""
