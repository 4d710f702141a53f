"""clusterip-ctl, the operator CLI. Each command lives in its own ``cmd_*`` module (see cli.COMMANDS)."""
