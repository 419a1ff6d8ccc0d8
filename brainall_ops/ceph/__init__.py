"""ceph"""
