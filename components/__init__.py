"""The Pulumi components: the resources of a stack, declared from the settings and plans that core/ makes."""
